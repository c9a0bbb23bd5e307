"""CUDA kernels (numba.cuda) for training: the low-rank drift loss with its gradient and the Gram
statistics of the closed-form solves, the GPU twins of ``cpu.lowrank_drift_loss_grad``,
``cpu.gram_statistics`` and ``cpu.weighted_gram_statistics`` (docs/model.md §3a, §4c–§4d, §5, §7).

Same signatures, same returned values (host numpy arrays, float64), computed on the device. The
maths is the CPU kernels' (their docstrings derive it; it is repeated in plain text below), with
one implementation of tanh: ``phi`` here is ``ddm_numba._jit.phi`` compiled as a device function,
so both backends agree to rounding (the tests measure ≤ 1e-15 relative).

Transfers. Each loss call copies the parameters to the device once (one packed float64 vector)
and the result back once (loss and every gradient block in one vector). The samples z, u, f and
the weights Λ stay on the device across calls: ``drift_samples`` uploads them once, as a
``DeviceDriftData``, which the loss takes in place of the CPU's host tuple::

    data = drift_samples(z, u, f, lam)            # one upload of the samples
    for theta in optimizer:                        # e.g. each L-BFGS-B evaluation
        loss, gA, gbz, gBz, gMT, gc = lowrank_drift_loss_grad(data, A, b_z, B_z, MT, c, tau)

``DeviceDriftData`` also keeps the scratch buffers (per-block partial sums, intermediates), so a
training loop allocates device memory only on its first evaluation.

The Gram statistics (G = (1/K) Σ ψψᵀ and friends, O(K n²)) are where the full mode's training
and learning from data spend their time: features for a chunk of samples, then tiled GEMMs that
accumulate Ψᵀ Ψ over the chunks.

Determinism. Sums over samples are taken per block in shared memory in a fixed order, written as
per-block partials, and the partials are added by one more kernel in block order; the GEMMs give
each output element one owner thread, which adds the chunks in order. No float atomics, so a call
gives the same bits every time on a given GPU and launch configuration.

Limits. d ≤ MAX_D and p ≤ MAX_P for the loss (they size per-thread and shared arrays at compile
time, as a real GPU compiler requires); larger problems raise DDMError pointing to the CPU
backend. N and K are free. Everything here compiles for sm_75+: constant-size local and shared
arrays, no allocation in kernels, 256 threads per block, no warp shuffles (so the CUDA simulator
runs the same code).
"""
import numpy as np
from numba import cuda, float64

from .cuda_simulate import phi  # _jit.phi compiled for CUDA, once for both backends
from ..errors import DDMError

__all__ = ["DeviceDriftData", "drift_samples", "lowrank_drift_loss_grad", "gram_statistics",
           "weighted_gram_statistics", "MAX_D", "MAX_P"]

MAX_D = 8          # latent dimensions the kernels accept (local/shared array sizes)
MAX_P = 8          # inputs the kernels accept

# Per-sample reductions over neurons (the low-rank residual): a block holds ROWS
# samples × LANES neuron lanes; lane ℓ handles neurons ℓ, ℓ + LANES, ... (coalesced along a warp).
LANES = 32
ROWS = 8
# Low-rank neuron gradients: a block holds NT neurons × SL sample lanes and a chunk of samples.
NT = 32
SL = 8
TARGET_CHUNKS = 64  # sample chunks per neuron tile (enough blocks to fill a GPU for N ~ 10³)
# Tiled GEMM (Gram statistics): a block computes a BM × BM output tile, each of its TB × TB threads a
# RM × RM register tile (strided by TB, so shared reads broadcast and global stores coalesce).
TB = 16
RM = 4
BM = TB * RM       # 64
RM2 = RM * RM      # named: a local array's size must be one constant, not an expression
BK = 16            # depth of one shared-memory step
BMP = BM + 1       # padded row of a shared slab: the transposing stores of X hit distinct banks
LOADS = BM * BK // (TB * TB)       # elements of each slab one thread stages per step
NVAL = 1 + MAX_D + MAX_D * MAX_P   # loss, b_z and B_z terms of one sample (low-rank)
NQ = 2 * MAX_D + 1                 # A, Mᵀ and c terms of one neuron (low-rank)
THREADS = 256
# Device memory for the Gram passes' per-chunk features Ψ (bytes). The samples are processed in
# chunks of this size: O(chunk · N) memory, never K × N.
GRAM_SCRATCH_BYTES = 1 << 28



# -- device data ------------------------------------------------------------------------------

def _require_cuda():
    try:
        ok = cuda.is_available()
    except Exception as exc:  # driver problems surface here
        raise DDMError(f"the CUDA backend cannot run here ({exc}); use the CPU backend "
                       "(device='cpu')") from None
    if not ok:
        raise DDMError("no usable CUDA GPU (numba.cuda.is_available() is False); use the CPU "
                       "backend (device='cpu')")


def _check_limits(d, p):
    if d > MAX_D:
        raise DDMError(f"d = {d} exceeds the CUDA loss kernels' limit MAX_D = {MAX_D}; use the CPU "
                       "backend (device='cpu')")
    if p > MAX_P:
        raise DDMError(f"p = {p} inputs exceed the CUDA loss kernels' limit MAX_P = {MAX_P}; use "
                       "the CPU backend (device='cpu')")


def _host(x, name, shape):
    """C-contiguous float64 copy of ``x`` with the given shape (None: any length)."""
    a = np.ascontiguousarray(x, dtype=np.float64)
    if a.ndim != len(shape) or any(s is not None and s != t for s, t in zip(shape, a.shape)):
        want = "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"
        raise DDMError(f"{name} has shape {a.shape}, expected {want}")
    return a


class DeviceDriftData:
    """Drift samples kept on the GPU across loss evaluations (docs/model.md §4, §5 step 3).

    z (K, d), u (K, p) (p may be 0), f (K, d) and the weights Λ = lam (d,) are uploaded once
    (``drift_samples``). Pass the object as the samples of ``lowrank_drift_loss_grad``: an
    L-BFGS-B loop then moves only parameters and gradients. The object also caches the kernels'
    scratch buffers, so it is not safe to share between threads.
    """

    def __init__(self, z, u, f, lam):
        z = _host(z, "z", (None, None))
        K, d = z.shape
        if K == 0 or d == 0:
            raise DDMError(f"z has shape {z.shape}: need at least one sample and one dimension")
        u = _host(np.reshape(u, (K, -1)) if np.size(u) else np.zeros((K, 0)), "u", (K, None))
        f = _host(f, "f", (K, d))
        lam = _host(lam, "lam", (d,))
        p = u.shape[1]
        _check_limits(d, p)
        _require_cuda()
        self.K, self.d, self.p = K, d, p
        # u keeps at least one column: kernels never read it when p = 0, and every device array
        # then has nonzero size
        u_pad = u if p else np.zeros((K, 1))
        self.z = cuda.to_device(z)
        self.u = cuda.to_device(u_pad)
        self.f = cuda.to_device(f)
        self.lam = cuda.to_device(lam)
        self._scratch = {}

    def scratch(self, name, shape):
        """A device float64 array of this shape kept for reuse (contents undefined)."""
        shape = tuple(int(s) for s in shape)
        held = self._scratch.get(name)
        if held is None or held.shape != shape:
            held = cuda.device_array(shape, dtype=np.float64)
            self._scratch[name] = held
        return held

    def upload(self, name, flat):
        """Copy a packed host parameter vector into a cached device buffer (one transfer)."""
        buf = self.scratch(name, flat.shape)
        buf.copy_to_device(flat)
        return buf


def _views(buf, shapes):
    """Reshaped consecutive slices of a flat device buffer (no copies, no transfers)."""
    out = []
    start = 0
    for shape in shapes:
        size = int(np.prod(shape))
        out.append(buf[start:start + size].reshape(shape))
        start += size
    return out


def _blocks(n, per):
    return (n + per - 1) // per


# -- shared pieces ----------------------------------------------------------------------------

@cuda.jit
def _sum_rows(part, out, offset):
    """out[offset + t] = Σ_b part[b, t], b in increasing order: the fixed-order final reduction of
    per-block partial sums (deterministic; no atomics)."""
    t = cuda.grid(1)
    if t < part.shape[1]:
        s = 0.0
        for b in range(part.shape[0]):
            s += part[b, t]
        out[offset + t] = s


def _launch_sum_rows(part, out, offset):
    _sum_rows[_blocks(part.shape[1], THREADS), THREADS](part, out, offset)


@cuda.jit(device=True, inline="always")
def _lane_sum(acc, row, q):
    """Σ_ℓ acc[row, q, ℓ] over the LANES lanes of one sample, in lane order (fixed, so
    deterministic). One thread per quantity: cheaper than a tree's log₂(LANES) barriers when the
    lanes' own loop over N neurons dominates, as it does here."""
    s = 0.0
    for ell in range(LANES):
        s += acc[row, q, ell]
    return s


# -- low-rank mode (docs/model.md §3a) ----------------------------------------------------------

@cuda.jit
def _lowrank_residual(samples, A, b_z, B_z, MT, c, tau, p, E, part):
    """Pass 1 of the low-rank drift loss: per-sample residuals, loss and the b_z, B_z gradients,
    on samples = (z, u, f, Λ) (device arrays).

    Block = ROWS samples × LANES neuron lanes. For sample k (h_k = M z_k + c, φ = tanh):
        s_k   = A φ(h_k)                       (lanes sum over neurons; lane a adds the lanes' s_ka)
        r_k   = (1/τ) [ −z_k + s_k + b_z + B_z u_k ] − f_k
        e_k   = (2/(K τ)) Λ ⊙ r_k              (= ∂L/∂(τ f_net,k); stored in E for pass 2)
    and the block's partial sums over its samples, part[block] = [Σ_k Σ_a Λ_a r_ka²,
    Σ_k e_k (= ∂L/∂b_z part), Σ_k e_k u_kᵀ (= ∂L/∂B_z part, row-major)].
    """
    z, u, f, lam = samples
    t = cuda.threadIdx.x
    lane = t % LANES
    row = t // LANES
    k = cuda.blockIdx.x * ROWS + row
    K, d = z.shape
    N = c.shape[0]
    acc = cuda.shared.array((ROWS, MAX_D, LANES), float64)
    sums = cuda.shared.array((ROWS, MAX_D), float64)
    vals = cuda.shared.array((ROWS, NVAL), float64)
    s = cuda.local.array(MAX_D, float64)
    for a in range(d):
        s[a] = 0.0
    if k < K:
        for i in range(lane, N, LANES):
            h = c[i]
            for j in range(d):
                h += MT[j, i] * z[k, j]
            ph = phi(h)
            for a in range(d):
                s[a] += A[a, i] * ph
    for a in range(d):
        acc[row, a, lane] = s[a]
    cuda.syncthreads()
    if lane < d:
        sums[row, lane] = _lane_sum(acc, row, lane)
    cuda.syncthreads()
    nv = 1 + d + d * p
    if lane == 0:
        for v in range(nv):
            vals[row, v] = 0.0
        if k < K:
            loss = 0.0
            for a in range(d):
                sa = sums[row, a] + (b_z[a] - z[k, a])
                for q in range(p):
                    sa += B_z[a, q] * u[k, q]
                r = sa / tau - f[k, a]
                loss += lam[a] * r * r
                ea = 2.0 * lam[a] * r / (K * tau)
                E[k, a] = ea
                vals[row, 1 + a] = ea
                for q in range(p):
                    vals[row, 1 + d + a * p + q] = ea * u[k, q]
            vals[row, 0] = loss
    cuda.syncthreads()
    if t < nv:
        tot = 0.0
        for r_ in range(ROWS):
            tot += vals[r_, t]
        part[cuda.blockIdx.x, t] = tot


@cuda.jit
def _lowrank_neuron_grad(z, E, A, MT, c, chunk, part):
    """Pass 2 of the low-rank drift loss: the per-neuron gradients ∂L/∂A, ∂L/∂Mᵀ, ∂L/∂c.

    Block (x, y) = NT neurons × SL sample lanes over samples [y·chunk, (y+1)·chunk). For neuron i
    and sample k, with e_k from pass 1 and φ = φ(h_ki), h_ki = c_i + Σ_j M_ij z_kj:
        ∂L/∂A[a, i]  += e_ka φ
        δ_ki          = (Σ_a A[a, i] e_ka) (1 − φ²)      (= ∂L/∂h_ki, as ∂tanh/∂h = 1 − tanh²)
        ∂L/∂Mᵀ[j, i] += δ_ki z_kj,        ∂L/∂c_i += δ_ki
    Each thread accumulates its samples in registers; the SL lanes are added in shared memory in
    fixed order; part[y, q·N + i] holds the chunk's sum for quantity q (A rows, Mᵀ rows, c).
    """
    t = cuda.threadIdx.x
    tx = t % NT
    ty = t // NT
    i = cuda.blockIdx.x * NT + tx
    K, d = z.shape
    N = c.shape[0]
    k0 = cuda.blockIdx.y * chunk
    k1 = min(K, k0 + chunk)
    nq = 2 * d + 1
    g = cuda.local.array(NQ, float64)
    a_col = cuda.local.array(MAX_D, float64)
    m_col = cuda.local.array(MAX_D, float64)
    for q in range(nq):
        g[q] = 0.0
    if i < N:
        ci = c[i]
        for j in range(d):
            a_col[j] = A[j, i]
            m_col[j] = MT[j, i]
        for k in range(k0 + ty, k1, SL):
            h = ci
            for j in range(d):
                h += m_col[j] * z[k, j]
            ph = phi(h)
            sd = 0.0
            for a in range(d):
                ea = E[k, a]
                g[a] += ea * ph
                sd += a_col[a] * ea
            delta = sd * (1.0 - ph * ph)
            for j in range(d):
                g[d + j] += delta * z[k, j]
            g[2 * d] += delta
    sh = cuda.shared.array((SL, NQ, NT), float64)
    for q in range(nq):
        sh[ty, q, tx] = g[q]
    cuda.syncthreads()
    if i < N:
        for q in range(ty, nq, SL):
            tot = 0.0
            for r in range(SL):
                tot += sh[r, q, tx]
            part[cuda.blockIdx.y, q * N + i] = tot


def drift_samples(z, u, f, lam):
    """The samples of a drift loss, uploaded once for many evaluations (``DeviceDriftData``);
    the twin of ``cpu.drift_samples``."""
    return DeviceDriftData(z, u, f, lam)


def lowrank_drift_loss_grad(samples, A, b_z, B_z, MT, c, tau):
    """Low-rank drift loss (docs/model.md §3a, §4c) and its gradient, on the GPU.

    Same values as ``cpu.lowrank_drift_loss_grad``: for h_k = M z_k + c, φ = tanh,
        f_net,k = (1/τ) [ −z_k + A φ(h_k) + b_z + B_z u_k ],   r_k = f_net,k − f_k
        L       = (1/K) Σ_k Σ_a Λ_a r_ka²                     (regularizer added by the caller)
        e_k     = (2/(K τ)) Λ ⊙ r_k
        ∂L/∂A   = Σ_k e_k φ(h_k)ᵀ,   ∂L/∂b_z = Σ_k e_k,   ∂L/∂B_z = Σ_k e_k u_kᵀ
        δ_k     = (Aᵀ e_k) ⊙ (1 − φ(h_k)²),   ∂L/∂M = Σ_k δ_k z_kᵀ,   ∂L/∂c = Σ_k δ_k
    Returns (L, ∂L/∂A, ∂L/∂b_z, ∂L/∂B_z, ∂L/∂Mᵀ, ∂L/∂c) as host arrays.

    ``samples``: a ``DeviceDriftData`` (``drift_samples``), so that repeated calls move only the
    parameters (one upload) and the result (one download), or host arrays (z, u, f, lam), uploaded
    for this call.

    Layout: pass 1 (``_lowrank_residual``) gives each sample a row of LANES threads that sum A φ
    over neurons, so a sample's residual e_k needs no second pass over N; pass 2
    (``_lowrank_neuron_grad``) turns the loop around — a thread per neuron and sample lane, looping
    over a chunk of samples — so the N-sized gradients accumulate in registers, not in shared or
    global memory, and each sample's z_k, e_k are read once per warp (broadcast). φ is recomputed
    in pass 2 (cheaper than storing K × N values). Cost O(K N d) per pass.
    """
    data = samples if isinstance(samples, DeviceDriftData) else DeviceDriftData(*samples)
    K, d, p = data.K, data.d, data.p
    A = _host(A, "A", (d, None))
    N = A.shape[1]
    if N == 0:
        raise DDMError("A has no columns: the network needs at least one neuron")
    b_z = _host(b_z, "b_z", (d,))
    B_z = _host(B_z, "B_z", (d, p))
    MT = _host(MT, "MT", (d, N))
    c = _host(c, "c", (N,))
    tau = float(tau)
    Bz_pad = B_z if p else np.zeros((d, 1))
    shapes = [(d, N), (d, N), (N,), (d,), Bz_pad.shape]
    packed = np.concatenate([A.ravel(), MT.ravel(), c, b_z, Bz_pad.ravel()])
    dA, dMT, dc, db_z, dB_z = _views(data.upload("lowrank.theta", packed), shapes)

    nv = 1 + d + d * p
    nb1 = _blocks(K, ROWS)
    E = data.scratch("lowrank.E", (K, d))
    part1 = data.scratch("lowrank.part1", (nb1, nv))
    chunk = SL * _blocks(K, SL * TARGET_CHUNKS)
    n_chunks = _blocks(K, chunk)
    part2 = data.scratch("lowrank.part2", (n_chunks, (2 * d + 1) * N))
    out = data.scratch("lowrank.out", (nv + (2 * d + 1) * N,))

    _lowrank_residual[nb1, ROWS * LANES]((data.z, data.u, data.f, data.lam), dA, db_z, dB_z, dMT,
                                         dc, tau, p, E, part1)
    _lowrank_neuron_grad[(_blocks(N, NT), n_chunks), NT * SL](data.z, E, dA, dMT, dc, chunk, part2)
    _launch_sum_rows(part1, out, 0)
    _launch_sum_rows(part2, out, nv)
    flat = out.copy_to_host()

    loss = flat[0] / K
    gbz = flat[1:1 + d].copy()
    gBz = flat[1 + d:nv].reshape(d, p).copy()
    rest = flat[nv:].reshape(2 * d + 1, N)
    return loss, rest[:d].copy(), gbz, gBz, rest[d:2 * d].copy(), rest[2 * d].copy()


# -- Gram statistics (docs/model.md §4d, §5) -------------------------------------------------------

@cuda.jit(device=True, inline="always")  # inlined so that acc lives in registers
def _tile_product(X, Y, sX, sY, acc):
    """acc[ii·RM + jj] = Σ_t X[t, r] Y[t, s] (a tile of Xᵀ Y) for this thread's RM × RM outputs
    r = BM·by + ty + TB·ii, s = BM·bx + tx + TB·jj.

    Classic shared-memory tiling: per step, the block stages a BK × BM slab of X and one of Y
    (zero-padded at the edges; both read along their rows, coalesced) and every thread does RM²
    multiply-adds per pair of shared loads. Summation runs over t in increasing order
    (deterministic).
    """
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    tid = ty * TB + tx
    r0 = cuda.blockIdx.y * BM
    s0 = cuda.blockIdx.x * BM
    depth = X.shape[0]
    m = X.shape[1]
    n = Y.shape[1]
    for q in range(RM2):
        acc[q] = 0.0
    for t0 in range(0, depth, BK):
        for ell in range(LOADS):
            e = tid + TB * TB * ell
            tt = e // BM
            rr = e % BM
            ok = t0 + tt < depth and r0 + rr < m
            sX[tt, rr] = X[t0 + tt, r0 + rr] if ok else 0.0
            ok = t0 + tt < depth and s0 + rr < n
            sY[tt, rr] = Y[t0 + tt, s0 + rr] if ok else 0.0
        cuda.syncthreads()
        for tt in range(BK):
            for ii in range(RM):
                x = sX[tt, ty + TB * ii]
                for jj in range(RM):
                    acc[ii * RM + jj] += x * sY[tt, tx + TB * jj]
        cuda.syncthreads()


@cuda.jit
def _gemm_tn(X, Y, C, accumulate):
    """C = Xᵀ Y, or C += Xᵀ Y when accumulate (Gram sums over chunks of samples: each element
    has one owner thread, so accumulation across launches needs no atomics)."""
    sX = cuda.shared.array((BK, BMP), float64)
    sY = cuda.shared.array((BK, BMP), float64)
    acc = cuda.local.array(RM2, float64)
    _tile_product(X, Y, sX, sY, acc)
    for ii in range(RM):
        r = cuda.blockIdx.y * BM + cuda.threadIdx.y + TB * ii
        for jj in range(RM):
            s = cuda.blockIdx.x * BM + cuda.threadIdx.x + TB * jj
            if r < C.shape[0] and s < C.shape[1]:
                if accumulate:
                    C[r, s] += acc[ii * RM + jj]
                else:
                    C[r, s] = acc[ii * RM + jj]


def _launch_gemm_tn(X, Y, C, accumulate):
    """C (+)= Xᵀ Y: a grid of BM × BM output tiles, TB × TB threads each."""
    _gemm_tn[(_blocks(C.shape[1], BM), _blocks(C.shape[0], BM)), (TB, TB)](X, Y, C, accumulate)


@cuda.jit
def _features(z, u, MT, c, p, k0, Psi):
    """Ψ[r] = ψ_k = [φ(h_k); 1; u_k] for the chunk's samples k = k0 + r, h_k = M z_k + c (the
    features of cpu._features; a thread per (neuron, sample), x along neurons: coalesced)."""
    i, r = cuda.grid(2)
    N = c.shape[0]
    d = z.shape[1]
    if r < Psi.shape[0] and i < N + 1 + p:
        k = k0 + r
        if i < N:
            h = c[i]
            for j in range(d):
                h += MT[j, i] * z[k, j]
            Psi[r, i] = phi(h)
        elif i == N:
            Psi[r, i] = 1.0
        else:
            Psi[r, i] = u[k, i - N - 1]


@cuda.jit
def _weighted_rows(Psi, W, k0, a, out):
    """out[r, i] = W[k0 + r, a] · Ψ[r, i]: the chunk's features weighted for output a."""
    i, r = cuda.grid(2)
    if r < out.shape[0] and i < out.shape[1]:
        out[r, i] = W[k0 + r, a] * Psi[r, i]


class _GramPass:
    """The common part of the Gram passes: the samples and embedding on the device, and the
    features Ψ of one chunk of samples at a time (GRAM_SCRATCH_BYTES of them, at most)."""

    def __init__(self, z, u, MT, c, columns):
        _require_cuda()
        z = _host(z, "z", (None, None))
        K, d = z.shape
        if K == 0:
            raise DDMError("no samples: the Gram statistics need at least one")
        u = _host(np.reshape(u, (K, -1)) if np.size(u) else np.zeros((K, 0)), "u", (K, None))
        MT = _host(MT, "MT", (d, None))
        N = MT.shape[1]
        c = _host(c, "c", (N,))
        self.K, self.N, self.p = K, N, u.shape[1]
        self.n = N + 1 + self.p
        self.z, self.MT, self.c = cuda.to_device(z), cuda.to_device(MT), cuda.to_device(c)
        self.u = cuda.to_device(u if self.p else np.zeros((K, 1)))
        per_sample = 8 * (2 * self.n + columns)    # Ψ, a weighted copy, the targets' share
        self.chunk = int(max(1, min(K, GRAM_SCRATCH_BYTES // per_sample)))
        self.Psi = cuda.device_array((self.chunk, self.n), np.float64)

    def chunks(self):
        """(k0, nk, Ψ of samples k0 … k0 + nk) for each chunk, in order."""
        for k0 in range(0, self.K, self.chunk):
            nk = min(self.chunk, self.K - k0)
            Psi = self.Psi[:nk]
            _features[(_blocks(self.n, 32), _blocks(nk, 8)), (32, 8)](
                self.z, self.u, self.MT, self.c, self.p, k0, Psi)
            yield k0, nk, Psi


def gram_statistics(z, u, Y, MT, c):
    """The twin of ``cpu.gram_statistics``, on the GPU: with ψ_k = [φ(M z_k + c); 1; u_k],
        G = (1/K) Σ_k ψ_k ψ_kᵀ,   C = (1/K) Σ_k ψ_k Y_kᵀ,   ψ̄ = (1/K) Σ_k ψ_k,
    as host arrays. Per chunk of samples: Ψ by ``_features``, then G += Ψᵀ Ψ, C += Ψᵀ Y and
    ψ̄ += Ψᵀ 1 by the tiled GEMM (O(chunk · n²), where the GPU pays)."""
    g = _GramPass(z, u, MT, c, columns=np.shape(Y)[1] if np.ndim(Y) == 2 else 0)
    Y = cuda.to_device(_host(Y, "Y", (g.K, None)))
    ones = cuda.to_device(np.ones((g.chunk, 1)))
    G = cuda.device_array((g.n, g.n), np.float64)
    C = cuda.device_array((g.n, Y.shape[1]), np.float64)
    mean = cuda.device_array((g.n, 1), np.float64)
    for k0, nk, Psi in g.chunks():
        _launch_gemm_tn(Psi, Psi, G, k0 > 0)
        if Y.shape[1]:
            _launch_gemm_tn(Psi, Y[k0:k0 + nk], C, k0 > 0)
        _launch_gemm_tn(Psi, ones[:nk], mean, k0 > 0)
    K = g.K
    C_host = C.copy_to_host() / K if Y.shape[1] else np.zeros((g.n, 0))
    return G.copy_to_host() / K, C_host, mean.copy_to_host()[:, 0] / K


def weighted_gram_statistics(z, Y, W, MT, c):
    """The twin of ``cpu.weighted_gram_statistics``, on the GPU: with ψ_k = [φ(M z_k + c); 1],
        G_a = (1/K) Σ_k W_ka ψ_k ψ_kᵀ  (q, n, n),   C[:, a] = (1/K) Σ_k W_ka ψ_k Y_ka  (n, q).
    Per chunk and output a: the weighted features W_a ⊙ Ψ (``_weighted_rows``), then
    G_a += (W_a ⊙ Ψ)ᵀ Ψ and C_a += (W_a ⊙ Ψ)ᵀ Y_a by the tiled GEMM."""
    z = _host(z, "z", (None, None))
    K = z.shape[0]
    Y = _host(Y, "Y", (K, None))
    q = Y.shape[1]
    W = _host(W, "W", (K, q))
    g = _GramPass(z, np.zeros((K, 0)), MT, c, columns=2 * q)
    dY, dW = cuda.to_device(Y), cuda.to_device(W)
    G = cuda.device_array((q, g.n, g.n), np.float64)
    C = cuda.device_array((q, g.n, 1), np.float64)
    Pw = cuda.device_array((g.chunk, g.n), np.float64)
    for k0, nk, Psi in g.chunks():
        for a in range(q):
            _weighted_rows[(_blocks(g.n, 32), _blocks(nk, 8)), (32, 8)](Psi, dW, k0, a, Pw[:nk])
            _launch_gemm_tn(Pw[:nk], Psi, G[a], k0 > 0)
            _launch_gemm_tn(Pw[:nk], dY[k0:k0 + nk, a:a + 1], C[a], k0 > 0)
    return G.copy_to_host() / K, C.copy_to_host()[:, :, 0].T.copy() / K
