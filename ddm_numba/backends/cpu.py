"""CPU kernels (numba): drift and diffusion losses with their gradients, Gram statistics, and
Euler–Maruyama simulation of the network. Symbols as in docs/model.md.

Kernels take C-contiguous float64 arrays (the callers in matching.py / simulate.py convert and
check shapes first). Loss kernels split the K samples into fixed blocks of BLOCK samples; each
block accumulates its own partial gradient, and the partial sums are added in block order, so
results are bit-identical whatever the thread count. No N×K temporaries: a block needs O(N d).

Embeddings are passed transposed, MT = Mᵀ (d, N), so that loops over neurons are unit-stride.
"""
from typing import NamedTuple

import numpy as np
from numba import prange
from numba.cpython.unsafe.tuple import tuple_setitem
from threadpoolctl import threadpool_limits

from .._jit import kernel, phi, phi_em
from ..errors import DDMError
from ..rng import normal_pair

NAME = "cpu"

BLOCK = 256
WEIGHTED_BLOCK = 4096
FULL_SLAB = 32  # fewest trials per BLAS product in full-connectivity sampling (_simulate_full)
# Reassociation lets LLVM vectorize dot products; no nnan/ninf, so non-finite values still show.
_FAST = {"nsz", "arcp", "contract", "afn", "reassoc"}

@kernel(inline="always", fastmath=_FAST)
def hidden_activity(z, k, MT, c, out):
    """out[:N] = φ(h_k), h_k = M z_k + c: the neurons' rates at latent sample k
    (docs/model.md §2)."""
    N = c.shape[0]
    for i in range(N):
        out[i] = c[i]
    for j in range(MT.shape[0]):
        zj = z[k, j]
        row = MT[j]
        for i in range(N):
            out[i] += row[i] * zj
    for i in range(N):
        out[i] = phi(out[i])



@kernel(inline="always", fastmath=_FAST)
def phi_sweep(src, dst):
    """dst[i] = φ(src[i]) for all i (src may be dst). The two halves go through the same loop
    iteration: two independent chains of φ's ~30 dependent operations are in flight at once,
    which the out-of-order core overlaps (one tanh 1.7 → 1.45 ns here; LLVM's vectorizer will not
    interleave a loop body this long by itself)."""
    n = src.shape[0]
    h = n // 2
    for i in range(h):
        a = src[i]
        b = src[i + h]
        dst[i] = phi(a)
        dst[i + h] = phi(b)
    if n % 2 == 1:
        dst[n - 1] = phi(src[n - 1])


def rows(X):
    """A 2-D array as a tuple of C-contiguous rows. Kernels take the d-row matrices Mᵀ and A this
    way: the length of a tuple is part of its numba type, so d becomes a compile-time constant,
    the loops over it unroll, and the loop over neurons around them vectorizes. (With d a runtime
    value the kernel needs one pass over the N neurons per latent dimension; fused, the low-rank
    loss+gradient is 1.8x faster at N = 1024, d = 3.) One compilation per d."""
    return tuple(np.ascontiguousarray(X[a]) for a in range(X.shape[0]))


class DriftSamples(NamedTuple):
    """Drift samples as the loss kernels read them: z (K, d), u (K, p), f (K, d), Λ = lam (d,)."""
    z: np.ndarray
    u: np.ndarray
    f: np.ndarray
    lam: np.ndarray


def drift_samples(z, u, f, lam):
    """The samples of a drift loss, made ready once for many evaluations (the CUDA twin keeps
    them on the GPU); here, C-contiguous float64 host arrays."""
    def host(a):
        return np.ascontiguousarray(a, dtype=np.float64)
    z = host(z)
    u = host(u) if np.size(u) else np.zeros((z.shape[0], 0))
    return DriftSamples(z, u, host(f), host(lam))


def lowrank_drift_loss_grad(samples, A, b_z, B_z, MT, c, tau):
    """Low-rank drift loss and gradient (see ``_lowrank_drift_loss_grad``) on ``samples``
    (drift_samples); A (d, N), Mᵀ (d, N). Returns (L, ∂L/∂A, ∂L/∂b_z, ∂L/∂B_z, ∂L/∂Mᵀ, ∂L/∂c)."""
    z, u, f, lam = samples
    return _lowrank_drift_loss_grad(z, u, f, lam, rows(A), b_z, B_z, rows(MT), c, tau)


@kernel(fastmath=_FAST)
def _loss_block(data, params, ib, out):
    """Block ib (samples ib·BLOCK … ) of ``_lowrank_drift_loss_grad``: its loss and gradient
    sums, into row ib of each of out = (loss_b, gA_b, gMT_b, gc_b, gbz_b, gBz_b)."""
    z, u, f, lam = data
    A, b_z, B_z, MT, c, tau = params
    loss_b, gA, gMT, gc, gbz, gBz = out
    K = z.shape[0]
    N = c.shape[0]
    d = len(A)
    p = u.shape[1]
    ph = np.empty(N)
    e = np.empty(d)
    loss = 0.0
    for k in range(ib * BLOCK, min(K, (ib + 1) * BLOCK)):
        zk = z[k]
        # forward: φ(h_k), one sweep (the loop over the d rows of Mᵀ is unrolled)
        for i in range(N):
            h = c[i]
            for j in range(len(MT)):
                h += MT[j][i] * zk[j]
            ph[i] = h
        phi_sweep(ph, ph)
        # residual: d dot products A_a · φ
        for a in range(len(A)):
            row = A[a]
            s = 0.0
            for i in range(N):
                s += row[i] * ph[i]
            s += b_z[a] - zk[a]
            for q in range(p):
                s += B_z[a, q] * u[k, q]
            r = s / tau - f[k, a]
            loss += lam[a] * r * r
            ea = 2.0 * lam[a] * r / (K * tau)
            e[a] = ea
            gbz[ib, a] += ea
            for q in range(p):
                gBz[ib, a, q] += ea * u[k, q]
        # backward: δ_i = (Σ_a A_ai e_a)(1 − φ_i²) and all gradient rows, one sweep
        for i in range(N):
            pi = ph[i]
            s = 0.0
            for a in range(len(A)):
                s += A[a][i] * e[a]
                gA[ib, a, i] += e[a] * pi
            s *= 1.0 - pi * pi
            gc[ib, i] += s
            for j in range(len(MT)):
                gMT[ib, j, i] += s * zk[j]
    loss_b[ib] = loss


@kernel(parallel=True, fastmath=_FAST)
def _loss_blocks(data, params, out):
    """The blocks of ``_lowrank_drift_loss_grad`` in parallel, each into its own rows of out.

    The parallel kernel holds the prange loop and nothing else. The allocations and the block
    sums around it live in the serial kernel that calls it: with parallel=True numba turns every
    np.zeros and every array expression (gA += gA_b[ib]) into a parallel loop of its own, each
    compiled as a gufunc (measured: a third of this kernel's compile time). The block's work is a
    function of its own, not the prange body (see _simulate_network: a body compiled into a
    gufunc vectorizes worse, and compiles slower)."""
    # unpacked and packed again inside the loop: a prange body cannot capture a tuple that
    # holds tuples of arrays (numba's gufunc wrapper refuses it), their parts it can
    z, u, f, lam = data
    A, b_z, B_z, MT, c, tau = params
    loss_b, gA_b, gMT_b, gc_b, gbz_b, gBz_b = out
    for ib in prange(loss_b.shape[0]):
        _loss_block((z, u, f, lam), (A, b_z, B_z, MT, c, tau), ib,
                    (loss_b, gA_b, gMT_b, gc_b, gbz_b, gBz_b))


@kernel(fastmath=_FAST)
def _lowrank_drift_loss_grad(z, u, f, lam, A, b_z, B_z, MT, c, tau):
    """Low-rank drift loss (docs/model.md §3a, §4c) and its gradient, fused over samples.

    For each sample k (h = M z_k + c, φ = tanh):
        f_net,k = (1/τ) [ −z_k + A φ(h_k) + b_z + B_z u_k ]
        r_k     = f_net,k − f_k
        L       = (1/K) Σ_k Σ_a Λ_a r_ka²                        (regularizer added by the caller)
    Let e_k = (2/(K τ)) Λ ⊙ r_k  (= ∂L/∂(τ f_net,k)). Then
        ∂L/∂A   = Σ_k e_k φ(h_k)ᵀ            ∂L/∂b_z = Σ_k e_k        ∂L/∂B_z = Σ_k e_k u_kᵀ
        δ_k     = (Aᵀ e_k) ⊙ (1 − φ(h_k)²)   (= ∂L/∂h_k, since ∂φ/∂h = 1 − φ²)
        ∂L/∂M   = Σ_k δ_k z_kᵀ               ∂L/∂c   = Σ_k δ_k
    A and Mᵀ come as tuples of d rows (``rows``). A sample costs three sweeps over the neurons:
    forward (h, φ), the d dot products A φ, backward (δ and every gradient row at once).
    Returns (L, ∂L/∂A, ∂L/∂b_z, ∂L/∂B_z, ∂L/∂Mᵀ, ∂L/∂c). Cost O(K N d), memory O(N d) per block.
    """
    K, d = z.shape
    N = c.shape[0]
    p = u.shape[1]
    nb = (K + BLOCK - 1) // BLOCK
    loss_b = np.zeros(nb)
    gA_b = np.zeros((nb, d, N))
    gMT_b = np.zeros((nb, d, N))
    gc_b = np.zeros((nb, N))
    gbz_b = np.zeros((nb, d))
    gBz_b = np.zeros((nb, d, p))
    _loss_blocks((z, u, f, lam), (A, b_z, B_z, MT, c, tau),
                 (loss_b, gA_b, gMT_b, gc_b, gbz_b, gBz_b))
    loss = 0.0
    gA = np.zeros((d, N))
    gMT = np.zeros((d, N))
    gc = np.zeros(N)
    gbz = np.zeros(d)
    gBz = np.zeros((d, p))
    for ib in range(nb):  # fixed order: same bits on any number of threads
        loss += loss_b[ib]
        gA += gA_b[ib]
        gMT += gMT_b[ib]
        gc += gc_b[ib]
        gbz += gbz_b[ib]
        gBz += gBz_b[ib]
    return loss / K, gA, gbz, gBz, gMT, gc


@kernel(fastmath=_FAST)
def _features(z, u, MT, c, start, stop, out):
    """out[k - start] = ψ_k = [φ(M z_k + c), 1, u_k] for k in [start, stop)."""
    N = c.shape[0]
    p = u.shape[1]
    for k in range(start, stop):
        row = out[k - start]
        hidden_activity(z, k, MT, c, row)
        row[N] = 1.0
        for q in range(p):
            row[N + 1 + q] = u[k, q]


@kernel()
def gram_statistics(z, u, Y, MT, c):
    """Sufficient statistics of a loss that is quadratic in the decoders.

    With features ψ_k = [φ(M z_k + c); 1; u_k] (n = N + 1 + p) and targets Y_k (q values):
        G = (1/K) Σ_k ψ_k ψ_kᵀ  (n, n),   C = (1/K) Σ_k ψ_k Y_kᵀ  (n, q),   ψ̄ = (1/K) Σ_k ψ_k.
    One O(K n²) pass, BLOCK samples at a time through BLAS; every later loss evaluation needs only
    these, whatever K is.
    """
    K = z.shape[0]
    N = c.shape[0]
    p = u.shape[1]
    n = N + 1 + p
    q = Y.shape[1]
    G = np.zeros((n, n))
    C = np.zeros((n, q))
    mean = np.zeros(n)
    buf = np.empty((BLOCK, n))
    for start in range(0, K, BLOCK):
        stop = min(K, start + BLOCK)
        Psi = buf[: stop - start]
        _features(z, u, MT, c, start, stop, Psi)
        G += Psi.T @ Psi
        C += Psi.T @ Y[start:stop]
        mean += Psi.sum(axis=0)
    return G / K, C / K, mean / K


def weighted_gram_statistics(z, Y, W, MT, c):
    """Gram statistics of least squares weighted per output.

    With features ψ_k = [φ(M z_k + c); 1] (n = N + 1), targets Y (K, q) and weights W (K, q):
        G_a = (1/K) Σ_k W_ka ψ_k ψ_kᵀ  (q, n, n),   C[:, a] = (1/K) Σ_k W_ka ψ_k Y_ka  (n, q),
    the normal equations of Σ_k W_ka (θ_aᵀψ_k − Y_ka)², one per output a (each output has its own
    Gram matrix once the weights differ). One pass, WEIGHTED_BLOCK samples at a time (q products
    per block: longer blocks keep the Python loop and the small-GEMM overhead out of the way); the
    features are computed once per block and shared by the q products.
    """
    K = z.shape[0]
    n = c.shape[0] + 1
    q = Y.shape[1]
    G = np.zeros((q, n, n))
    C = np.zeros((n, q))
    buf = np.empty((WEIGHTED_BLOCK, n))
    none = np.zeros((K, 0))
    for start in range(0, K, WEIGHTED_BLOCK):
        stop = min(K, start + WEIGHTED_BLOCK)
        Psi = buf[: stop - start]
        _features(z, none, MT, c, start, stop, Psi)
        Wb = W[start:stop]
        for a in range(q):
            Pw = Psi * Wb[:, a:a + 1]
            G[a] += Pw.T @ Psi
            C[:, a] += Pw.T @ Y[start:stop, a]
    return G / K, C / K


@kernel(fastmath=_FAST)
def _diffusion_block(z, Dt, params, ib, out):
    """Block ib of ``diffusion_loss_grad``: its sums into row ib of out = (loss_b, gS0_b, gR_b)."""
    S0, R, MT, c, D_private = params
    loss_b, gS0_b, gR_b = out
    K, d = z.shape
    m = S0.shape[1]
    N = c.shape[0]
    ph = np.empty(N)
    S = np.empty((d, m))
    E = np.empty((d, d))
    GS = np.empty((d, m))
    for k in range(ib * BLOCK, min(K, (ib + 1) * BLOCK)):
        hidden_activity(z, k, MT, c, ph)
        for a in range(d):
            for q in range(m):
                s = S0[a, q]
                for i in range(N):
                    s += R[a, q, i] * ph[i]
                S[a, q] = s
        for a in range(d):
            for a2 in range(d):
                s = D_private[a, a2] - Dt[k, a, a2]
                for q in range(m):
                    s += S[a, q] * S[a2, q]
                loss_b[ib] += s * s
                E[a, a2] = 2.0 * s / K
        for a in range(d):
            for q in range(m):
                s = 0.0
                for a2 in range(d):
                    s += E[a, a2] * S[a2, q]
                GS[a, q] = 2.0 * s
                gS0_b[ib, a, q] += GS[a, q]
                for i in range(N):
                    gR_b[ib, a, q, i] += GS[a, q] * ph[i]


@kernel(parallel=True, fastmath=_FAST)
def _diffusion_blocks(z, Dt, params, out):
    """The blocks of ``diffusion_loss_grad`` in parallel (the prange loop alone: _loss_blocks)."""
    S0, R, MT, c, D_private = params
    loss_b, gS0_b, gR_b = out
    for ib in prange(loss_b.shape[0]):
        _diffusion_block(z, Dt, (S0, R, MT, c, D_private), ib, (loss_b, gS0_b, gR_b))


@kernel(fastmath=_FAST)
def diffusion_loss_grad(z, Dt, S0, R, MT, c, D_private):
    """Diffusion loss (docs/model.md §3c, §4e) and its gradient in S0 and R.

        S_k = S0 + Σ_j R[:, :, j] φ_j(h_k),   D_net,k = S_k S_kᵀ + D_private   (D_private = σ_p² P Pᵀ)
        L   = (1/K) Σ_k ‖D_net,k − D_k‖²_F                      (regularizer added by the caller)
    With E_k = (2/K)(D_net,k − D_k) (symmetric), ∂L/∂S_k = 2 E_k S_k  (d ‖S Sᵀ − D‖² = 4 (S Sᵀ − D) S dS).
        ∂L/∂S0 = Σ_k 2 E_k S_k,   ∂L/∂R_{abj} = Σ_k (2 E_k S_k)_{ab} φ_j(h_k).
    Cost O(K N d m).
    """
    K, d = z.shape
    m = S0.shape[1]
    N = c.shape[0]
    nb = (K + BLOCK - 1) // BLOCK
    loss_b = np.zeros(nb)
    gS0_b = np.zeros((nb, d, m))
    gR_b = np.zeros((nb, d, m, N))
    _diffusion_blocks(z, Dt, (S0, R, MT, c, D_private), (loss_b, gS0_b, gR_b))
    loss = 0.0
    gS0 = np.zeros((d, m))
    gR = np.zeros((d, m, N))
    for ib in range(nb):
        loss += loss_b[ib]
        gS0 += gS0_b[ib]
        gR += gR_b[ib]
    return loss / K, gS0, gR


@kernel(fastmath=_FAST)
def _record(x, c, P, out):
    """out[a] = (P (x − c))_a for the d rows of P (a tuple); False if one is not finite."""
    finite = True
    for a in range(len(P)):
        row = P[a]
        s = 0.0
        for i in range(x.shape[0]):
            s += row[i] * (x[i] - c[i])
        out[a] = s
        # not np.isfinite: under these fast-math flags LLVM folds it to True (measured); an
        # ordered comparison is False for NaN and ±inf
        if not abs(s) < np.inf:
            finite = False
    return finite


@kernel(fastmath=_FAST)
def _draw_normals(states, tr, xi):
    """xi ← standard normals from trial tr's stream, drawn in pairs (an odd tail drops the
    second of its pair): the order every sampler keeps (docs/model.md §6)."""
    m = xi.shape[0]
    j = 0
    while j < m:
        g1, g2 = normal_pair(states, tr)
        xi[j] = g1
        if j + 1 < m:
            xi[j + 1] = g2
        j += 2


@kernel(fastmath=_FAST)
def _latent_noise(states, tr, S0, R, has_R, ph, xi, out):
    """out = S(x) ξ, S(x) = S0 + Σ_j R[:, :, j] φ_j(x), with the m normals ξ drawn in pairs from
    trial tr's stream (into xi)."""
    m = S0.shape[1]
    _draw_normals(states, tr, xi)
    for a in range(S0.shape[0]):
        s = 0.0
        for q in range(m):
            sq = S0[a, q]
            if has_R:
                for i in range(ph.shape[0]):
                    sq += R[a, q, i] * ph[i]
            s += sq * xi[q]
        out[a] = s


@kernel(fastmath=_FAST)
def _private_noise(states, tr, x, scale):
    """x += scale · η, with the N normals η drawn in pairs from trial tr's stream."""
    N = x.shape[0]
    i = 0
    while i < N:
        g1, g2 = normal_pair(states, tr)
        x[i] += scale * g1
        if i + 1 < N:
            x[i + 1] += scale * g2
        i += 2


def simulate_network(net, run, paths, dtype=np.float64, threads_per_block=None):
    """Euler–Maruyama for the network (``_simulate_network``): backends.arrays' NetworkArrays,
    RunSettings and PathArrays, as for every backend. Returns paths.blowup.

    dtype and threads_per_block are the CUDA twin's options; this backend computes in float64
    and has no thread blocks, so it accepts only their defaults.

    Mᵀ, A and P go to the kernels as tuples of d rows (``rows``), so that loops over d unroll.
    Full connectivity goes to ``_simulate_full``, which steps all trials together."""
    if np.dtype(dtype) != np.float64 or threads_per_block is not None:
        raise DDMError("the CPU backend simulates in float64 and has no thread blocks: float32 "
                       "and threads_per_block are for the CUDA backend (device='cuda')")
    net = net._replace(MT=rows(net.MT), A=rows(net.A), P=rows(net.P))
    if net.full:
        # one BLAS thread: the kernel's own threads each multiply a slab of trials (nested
        # BLAS and numba threads would oversubscribe the cores)
        with threadpool_limits(1, user_api="blas"):
            return _simulate_full(net, run, paths)
    return _simulate_network(net, run, paths, (0.0,) * len(net.MT))


@kernel(inline="always", fastmath=_FAST)
def phi_em_sweep(src, dst):
    """dst[i] = φ̃(src[i]) (``_jit.phi_em``, the sampler's activation), two chains per iteration
    as in ``phi_sweep``."""
    n = src.shape[0]
    h = n // 2
    for i in range(h):
        a = src[i]
        b = src[i + h]
        dst[i] = phi_em(a)
        dst[i + h] = phi_em(b)
    if n % 2 == 1:
        dst[n - 1] = phi_em(src[n - 1])


@kernel(inline="always", fastmath=_FAST)
def _as_tuple(values, zero):
    """The d values of an array as a tuple (zero: d zeros, the tuple's type), so that they live
    in registers through a loop over the neurons."""
    out = zero
    for a in range(len(zero)):
        out = tuple_setitem(out, a, values[a])
    return out


@kernel(inline="always", fastmath=_FAST)
def _step_sums(x, weights, want_rec, ph, sums, zero):
    """The sums the next step needs from x, into sums = (A φ̃(x), R φ̃(x), P (x − c)): the last
    only when ``want_rec``, the second only when has_R; weights = (c, A, R, has_R, P).
    ph: N scratch values for φ̃ (used with R only); zero: d zeros (``_as_tuple``).

    Without R (the common case) φ̃ and its d dot products are one pass: each φ̃ goes from a
    register into d accumulators (a tuple, so registers too) and never to memory. With R, φ̃ is
    stored once in ph and reused by the d + d·m dot products.

    Every loop indexes whole rows by the loop counter from 0, which numba knows is not negative,
    so no wraparound checks and the loops vectorize (an index i0 + k of unknown sign costs a
    check per access and stopped vectorization: the sampler 4× slower). No array slices in the
    loop either: each slice is an atomic reference-count increment and decrement."""
    c, A, R, has_R, P = weights
    Aphi, Rphi, rec = sums
    N = x.shape[0]
    acc = zero
    if has_R:
        phi_em_sweep(x, ph)
        for i in range(N):
            for a in range(len(A)):
                acc = tuple_setitem(acc, a, acc[a] + A[a][i] * ph[i])
        for a in range(R.shape[0]):
            for q in range(R.shape[1]):
                row = R[a, q]
                s = 0.0
                for i in range(N):
                    s += row[i] * ph[i]
                Rphi[a, q] = s
    else:
        for i in range(N):
            f = phi_em(x[i])
            for a in range(len(A)):
                acc = tuple_setitem(acc, a, acc[a] + A[a][i] * f)
    for a in range(len(A)):
        Aphi[a] = acc[a]
    if want_rec:
        for a in range(len(P)):
            row = P[a]
            s = 0.0
            for i in range(N):
                s += row[i] * (x[i] - c[i])
            rec[a] = s


@kernel(parallel=True, fastmath=_FAST)
def _simulate_network(net, run, paths, zero):
    """Euler–Maruyama for a low-rank network (docs/model.md §1, §6), one trial per prange
    iteration (full connectivity: ``_simulate_full``).

        x ← x + (dt/τ) [ −x + b + B_in u(t) ] + M ℓ + √dt σ_p η,
        ℓ = (dt/τ) A φ̃(x) + √dt S(x) ξ,   S(x) = S0 + Σ_j R[:, :, j] φ̃_j(x),
    ξ ~ N(0, I_m), η ~ N(0, I_N): W φ = M (A φ), O(N d) a step, with φ̃ = ``_jit.phi_em``.
    Two passes over the neurons a step, both over whole rows: the update of x (all d rows of M in
    one pass), then φ̃(x) with the sums the next step needs (A φ̃, R φ̃, and P (x − c) before a
    record; ``_step_sums``), without R φ̃ going from a register straight into the d sums. At
    N = 1024 the trial's state and the weights stay in L1/L2 between the passes. (A sweep in
    tiles of 256 neurons, each tile updated and summed while in L1, was 1.3× slower at N = 1024
    and 1.15× at 8192: every tile took a dozen array slices, each an atomic reference-count
    increment and decrement; benchmarks/README.md §2.)
    Mᵀ, A and P come as tuples of d rows (``rows``), so the loops over d unroll; zero is a tuple
    of d zeros, the type of the d sums held in registers (numba cannot make one of a length known
    only from a type).
    Random numbers come from trial i's own xoroshiro128+ stream (states[i]), drawn each step in this
    order: the m latent normals ξ (pairs), then, if σ_p > 0, the N private normals η (pairs, in
    neuron order). So a trial's path does not depend on the thread that runs it.
    Records z = P (x − c) at steps 0, every, 2·every, ... into z_out[i] (and x into x_out[i]).
    A trial whose state stops being finite is stopped; blowup[i] = the first bad step (else −1).
    x0 is overwritten with the final states and ``states`` advanced, so calling again with them
    continues the same paths (the sampler runs in chunks of steps: interruptible, with progress).

    The trial's work is a function of its own (``_run_trial``), called from the prange loop, not
    the loop's body: numba compiles a prange body into a gufunc in which these inner loops ran
    3–5× slower (measured: the same code, 3.2e8 neuron-steps/s on one thread inside prange,
    1.2e9 as a plain function; the loops stop vectorizing).
    """
    # unpacked and packed again inside the loop: a prange body cannot capture a named tuple
    # that holds tuples of arrays (numba's gufunc wrapper refuses it), their parts it can
    MT, c, A, WT, full, b, BinT, S0, R, has_R, sigma_p, P, tau = net
    U, dt, n_steps, every, save_x = run
    x0, states, z_out, x_out, blowup = paths
    for tr in prange(x0.shape[0]):
        _run_trial((MT, c, A, WT, full, b, BinT, S0, R, has_R, sigma_p, P, tau),
                   (U, dt, n_steps, every, save_x), (x0, states, z_out, x_out, blowup), tr, zero)
    return blowup


@kernel(fastmath=_FAST)
def _run_trial(net, run, paths, tr, zero):
    """Trial tr of ``_simulate_network``: its whole run, in place in ``paths``."""
    MT, c, A, _WT, _full, b, BinT, S0, R, has_R, sigma_p, P, tau = net
    U, dt, n_steps, every, save_x = run
    x0, states, z_out, x_out, blowup = paths
    N = x0.shape[1]
    d = len(MT)
    m = S0.shape[1]
    p = BinT.shape[0]
    sqdt = np.sqrt(dt)
    rate = dt / tau
    x = x0[tr].copy()
    ph = np.empty(N if has_R else 0)
    drive = np.empty(N)
    Aphi = np.zeros(d)
    Rphi = np.zeros((d, m))
    rec = np.zeros(d)
    latent = np.zeros(d)
    xi = np.empty(m)
    weights = (c, A, R, has_R, P)
    sums = (Aphi, Rphi, rec)
    blowup[tr] = -1
    _step_sums(x, weights, True, ph, sums, zero)      # the sums of the start state
    for step in range(n_steps + 1):
        if step % every == 0:
            r = step // every
            finite = True
            for a in range(d):
                z_out[tr, r, a] = rec[a]
                # not np.isfinite: under these fast-math flags LLVM folds it to True
                # (measured); an ordered comparison is False for NaN and ±inf
                if not abs(rec[a]) < np.inf:
                    finite = False
            if save_x:
                for i in range(N):
                    x_out[tr, r, i] = x[i]
            if not finite:
                blowup[tr] = step
                break
        if step == n_steps:
            break
        # the latent part ℓ = (dt/τ) A φ̃ + √dt S(x) ξ, from the sums of the last step
        _draw_normals(states, tr, xi)
        for a in range(d):
            s = 0.0
            for q in range(m):
                sq = S0[a, q]
                if has_R:
                    sq += Rphi[a, q]
                s += sq * xi[q]
            latent[a] = rate * Aphi[a] + sqdt * s
        # the bias b + B_in u goes through an array only when some u ≠ 0
        use_drive = False
        for q in range(p):
            uq = U[step, q]
            if uq != 0.0:
                if not use_drive:
                    for i in range(N):
                        drive[i] = b[i]
                    use_drive = True
                for i in range(N):
                    drive[i] += BinT[q, i] * uq
        bias = drive if use_drive else b
        la = _as_tuple(latent, zero)
        for i in range(N):
            v = x[i] + rate * (bias[i] - x[i])
            for a in range(len(MT)):        # unrolled: d is in the tuple's type
                v += MT[a][i] * la[a]
            x[i] = v
        if sigma_p > 0.0:
            _private_noise(states, tr, x, sigma_p * sqdt)
        _step_sums(x, weights, (step + 1) % every == 0, ph, sums, zero)
    for i in range(N):        # the final state, so that a run can go on in chunks
        x0[tr, i] = x[i]


@kernel(parallel=True, fastmath=_FAST)
def _simulate_full(net, run, paths):
    """Euler–Maruyama with full connectivity, x ← x + (dt/τ)[−x + W φ̃(x) + b + B_in u] +
    √dt (M S(x) ξ + σ_p η): the same numbers, draws and records as ``_simulate_network``, with
    W φ̃ in place of M A φ̃, and all trials advancing together.

    A full step costs the product W φ(x), N² per trial. Done trial by trial it is a
    matrix–vector product that reads all of W from memory for every trial and step; for a slab of
    trials it is one matrix–matrix product Φ Wᵀ (trials × N by N × N) through BLAS, which reads W
    once per slab and step and runs near the machine's dgemm peak. The rest of a step (φ, the
    noise, the update) is O(N) per trial and runs in prange over trials, each drawing from its own
    stream in the same order as the per-trial kernel, so the paths agree with it to rounding.
    A trial that stops being finite is stopped: its row of Φ is zeroed and it is no longer recorded.
    """
    MT, c, _A, WT, _full, b, BinT, S0, R, has_R, sigma_p, P, tau = net
    U, dt, n_steps, every, save_x = run
    x0, states, z_out, x_out, blowup = paths
    n_trials, N = x0.shape
    d = len(MT)
    m = S0.shape[1]
    p = BinT.shape[0]
    sqdt = np.sqrt(dt)
    rate = dt / tau
    X = x0.copy()
    Phi = np.empty((n_trials, N))
    Drive = np.empty((n_trials, N))
    alive = np.ones(n_trials, dtype=np.bool_)
    # Slabs sized by the number of trials, never by the thread count: a BLAS product's rounding
    # can depend on how many rows it gets, and paths must not depend on the thread count. Between
    # FULL_SLAB and 4·FULL_SLAB rows (one-core dgemm here: 34 GFLOP/s at 32 rows, 36 at 64, 39.5
    # at 128), and about 4 slabs when there are enough trials, so that threads share the work.
    slab = min(4 * FULL_SLAB, max(FULL_SLAB, n_trials // 4))
    n_slabs = (n_trials + slab - 1) // slab
    for tr in range(n_trials):
        blowup[tr] = -1
    for step in range(n_steps + 1):
        if step % every == 0:
            rec = step // every
            for tr in prange(n_trials):
                if not alive[tr]:
                    continue
                x = X[tr]
                finite = _record(x, c, P, z_out[tr, rec])
                if save_x:
                    for i in range(N):
                        x_out[tr, rec, i] = x[i]
                if not finite:
                    blowup[tr] = step
                    alive[tr] = False
        if step == n_steps:
            break
        for tr in prange(n_trials):
            x = X[tr]
            row = Phi[tr]
            if alive[tr]:
                phi_em_sweep(x, row)
            else:
                for i in range(N):
                    row[i] = 0.0
        # Drive[t] = W φ(x_t): one BLAS product Φ Wᵀ per slab of trials, slabs in parallel
        for sl in prange(n_slabs):
            lo = sl * slab
            hi = min(n_trials, lo + slab)
            if lo < hi:
                np.dot(Phi[lo:hi], WT, Drive[lo:hi])
        for tr in prange(n_trials):
            if not alive[tr]:
                continue
            x = X[tr]
            dr = Drive[tr]
            ph = Phi[tr]
            xi = np.empty(m)
            noise = np.empty(d)
            _latent_noise(states, tr, S0, R, has_R, ph, xi, noise)
            for q in range(p):
                uq = U[step, q]
                if uq != 0.0:
                    for i in range(N):
                        dr[i] += BinT[q, i] * uq
            for i in range(N):
                v = x[i] + rate * (dr[i] + b[i] - x[i])
                for a in range(len(MT)):
                    v += MT[a][i] * (noise[a] * sqdt)
                x[i] = v
            if sigma_p > 0.0:
                _private_noise(states, tr, x, sigma_p * sqdt)
    for tr in prange(n_trials):   # the final state, so that a run can go on in chunks
        for i in range(N):
            x0[tr, i] = X[tr, i]
    return blowup
