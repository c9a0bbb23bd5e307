"""CUDA kernels (numba.cuda) for the drift losses and their gradients: the GPU twins of
``cpu.lowrank_drift_loss_grad`` and ``cpu.full_drift_loss_grad`` (docs/model.md §3a, §3b, §4c–§4d,
§7).

Same signatures, same returned values (host numpy arrays, float64), computed on the device. The
maths is the CPU kernels' (their docstrings derive it; it is repeated in plain text below), with
one implementation of tanh: ``phi`` here is ``ddm_numba._jit.phi`` compiled as a device function,
so both backends agree to rounding (the tests measure ≤ 1e-15 relative).

Transfers. Each call copies the parameters to the device once (one packed float64 vector) and
the result back once (loss and every gradient block in one vector). The samples z, u, f and the
weights Λ can stay on the device across calls: wrap them once in ``DeviceDriftData`` and pass that
object in place of ``z`` (with ``u``, ``f``, ``lam`` = None)::

    data = DeviceDriftData(z, u, f, lam)          # one upload of the samples
    for theta in optimizer:                        # e.g. each L-BFGS-B evaluation
        loss, gA, gbz, gBz, gMT, gc = lowrank_drift_loss_grad(data, None, None, None,
                                                              A, bz, Bz, MT, c, tau)

``DeviceDriftData`` also keeps the scratch buffers (per-block partial sums, intermediates), so a
training loop allocates device memory only on its first evaluation. Host arrays work too: the call
then builds a temporary ``DeviceDriftData`` (and uploads the samples) itself.

Determinism. Sums over samples are taken per block in shared memory in a fixed order, written as
per-block partials, and the partials are added by one more kernel in block order: no float atomics,
so a call gives the same bits every time on a given GPU and launch configuration.

Limits. d ≤ MAX_D and p ≤ MAX_P (they size per-thread and shared arrays at compile time, as a real
GPU compiler requires); larger problems raise DDMError pointing to the CPU backend. N and K are
free. Everything here compiles for sm_75+: constant-size local and shared arrays, no allocation in
kernels, 256 threads per block, no warp shuffles (so the CUDA simulator runs the same code).
"""
import numpy as np
from numba import cuda, float64

from .cuda_simulate import phi  # _jit.phi compiled for CUDA, once for both backends
from ..errors import DDMError

__all__ = ["DeviceDriftData", "lowrank_drift_loss_grad", "full_drift_loss_grad", "MAX_D", "MAX_P"]

MAX_D = 8          # latent dimensions the kernels accept (local/shared array sizes)
MAX_P = 8          # inputs the kernels accept

# Per-sample reductions over neurons (low-rank residual, full-mode loss): a block holds ROWS
# samples × LANES neuron lanes; lane ℓ handles neurons ℓ, ℓ + LANES, ... (coalesced along a warp).
LANES = 32
ROWS = 8
# Low-rank neuron gradients: a block holds NT neurons × SL sample lanes and a chunk of samples.
NT = 32
SL = 8
TARGET_CHUNKS = 64  # sample chunks per neuron tile (enough blocks to fill a GPU for N ~ 10³)
# Tiled GEMM (full mode): a block computes a BM × BM output tile, each of its TB × TB threads a
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
# Device memory for the full mode's per-chunk intermediates Ψ, F/G, [F Q, F Pᵀ] (bytes). The
# samples are processed in chunks of this size: O(chunk · N) memory, never K × N.
FULL_SCRATCH_BYTES = 1 << 28



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

    z (K, d), u (K, p) (p may be 0), f (K, d) and the weights Λ = lam (d,) are uploaded once. Pass
    the object as the ``z`` argument of ``lowrank_drift_loss_grad`` / ``full_drift_loss_grad``
    (with u, f, lam = None): an L-BFGS-B loop then moves only parameters and gradients. The object
    also caches the kernels' scratch buffers, so it is not safe to share between threads.
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


def _device_data(z, u, f, lam):
    if isinstance(z, DeviceDriftData):
        if u is not None or f is not None or lam is not None:
            raise DDMError("with a DeviceDriftData as z, pass u, f and lam as None (the object "
                           "holds them)")
        return z
    return DeviceDriftData(z, u, f, lam)


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
def _lowrank_residual(z, u, f, lam, A, bz, Bz, MT, c, tau, p, E, part):
    """Pass 1 of the low-rank drift loss: per-sample residuals, loss and the b_z, B_z gradients.

    Block = ROWS samples × LANES neuron lanes. For sample k (h_k = M z_k + c, φ = tanh):
        s_k   = A φ(h_k)                       (lanes sum over neurons; lane a adds the lanes' s_ka)
        r_k   = (1/τ) [ −z_k + s_k + b_z + B_z u_k ] − f_k
        e_k   = (2/(K τ)) Λ ⊙ r_k              (= ∂L/∂(τ f_net,k); stored in E for pass 2)
    and the block's partial sums over its samples, part[block] = [Σ_k Σ_a Λ_a r_ka²,
    Σ_k e_k (= ∂L/∂b_z part), Σ_k e_k u_kᵀ (= ∂L/∂B_z part, row-major)].
    """
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
                sa = sums[row, a] + (bz[a] - z[k, a])
                for q in range(p):
                    sa += Bz[a, q] * u[k, q]
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


def lowrank_drift_loss_grad(z, u, f, lam, A, bz, Bz, MT, c, tau):
    """Low-rank drift loss (docs/model.md §3a, §4c) and its gradient, on the GPU.

    Same values as ``cpu.lowrank_drift_loss_grad``: for h_k = M z_k + c, φ = tanh,
        f_net,k = (1/τ) [ −z_k + A φ(h_k) + b_z + B_z u_k ],   r_k = f_net,k − f_k
        L       = (1/K) Σ_k Σ_a Λ_a r_ka²                     (regularizer added by the caller)
        e_k     = (2/(K τ)) Λ ⊙ r_k
        ∂L/∂A   = Σ_k e_k φ(h_k)ᵀ,   ∂L/∂b_z = Σ_k e_k,   ∂L/∂B_z = Σ_k e_k u_kᵀ
        δ_k     = (Aᵀ e_k) ⊙ (1 − φ(h_k)²),   ∂L/∂M = Σ_k δ_k z_kᵀ,   ∂L/∂c = Σ_k δ_k
    Returns (L, ∂L/∂A, ∂L/∂b_z, ∂L/∂B_z, ∂L/∂Mᵀ, ∂L/∂c) as host arrays.

    ``z`` may be a ``DeviceDriftData`` (then u, f, lam are None) so that repeated calls move only
    the parameters (one upload) and the result (one download).

    Layout: pass 1 (``_lowrank_residual``) gives each sample a row of LANES threads that sum A φ
    over neurons, so a sample's residual e_k needs no second pass over N; pass 2
    (``_lowrank_neuron_grad``) turns the loop around — a thread per neuron and sample lane, looping
    over a chunk of samples — so the N-sized gradients accumulate in registers, not in shared or
    global memory, and each sample's z_k, e_k are read once per warp (broadcast). φ is recomputed
    in pass 2 (cheaper than storing K × N values). Cost O(K N d) per pass.
    """
    data = _device_data(z, u, f, lam)
    K, d, p = data.K, data.d, data.p
    A = _host(A, "A", (d, None))
    N = A.shape[1]
    if N == 0:
        raise DDMError("A has no columns: the network needs at least one neuron")
    bz = _host(bz, "bz", (d,))
    Bz = _host(Bz, "Bz", (d, p))
    MT = _host(MT, "MT", (d, N))
    c = _host(c, "c", (N,))
    tau = float(tau)
    Bz_pad = Bz if p else np.zeros((d, 1))
    shapes = [(d, N), (d, N), (N,), (d,), Bz_pad.shape]
    packed = np.concatenate([A.ravel(), MT.ravel(), c, bz, Bz_pad.ravel()])
    dA, dMT, dc, dbz, dBz = _views(data.upload("lowrank.theta", packed), shapes)

    nv = 1 + d + d * p
    nb1 = _blocks(K, ROWS)
    E = data.scratch("lowrank.E", (K, d))
    part1 = data.scratch("lowrank.part1", (nb1, nv))
    chunk = SL * _blocks(K, SL * TARGET_CHUNKS)
    n_chunks = _blocks(K, chunk)
    part2 = data.scratch("lowrank.part2", (n_chunks, (2 * d + 1) * N))
    out = data.scratch("lowrank.out", (nv + (2 * d + 1) * N,))

    _lowrank_residual[nb1, ROWS * LANES](data.z, data.u, data.f, data.lam, dA, dbz, dBz, dMT, dc,
                                         tau, p, E, part1)
    _lowrank_neuron_grad[(_blocks(N, NT), n_chunks), NT * SL](data.z, E, dA, dMT, dc, chunk, part2)
    _launch_sum_rows(part1, out, 0)
    _launch_sum_rows(part2, out, nv)
    flat = out.copy_to_host()

    loss = flat[0] / K
    gbz = flat[1:1 + d].copy()
    gBz = flat[1 + d:nv].reshape(d, p).copy()
    rest = flat[nv:].reshape(2 * d + 1, N)
    return loss, rest[:d].copy(), gbz, gBz, rest[d:2 * d].copy(), rest[2 * d].copy()


# -- full mode (docs/model.md §3b) ----------------------------------------------------------------

@cuda.jit(device=True, inline="always")  # inlined so that acc lives in registers
def _tile_product(X, Y, trans_x, sX, sY, acc):
    """acc[ii·RM + jj] = Σ_t opX[r, t] Y[t, s] for this thread's RM × RM outputs
    r = BM·by + ty + TB·ii, s = BM·bx + tx + TB·jj, where opX = Xᵀ if trans_x else X.

    Classic shared-memory tiling: per step, the block stages a BM × BK slab of opX and a BK × BM
    slab of Y (zero-padded at the edges) and every thread does RM² multiply-adds per pair of
    shared loads. Summation runs over t in increasing order (deterministic).
    """
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    tid = ty * TB + tx
    r0 = cuda.blockIdx.y * BM
    s0 = cuda.blockIdx.x * BM
    if trans_x:
        depth = X.shape[0]
        m = X.shape[1]
    else:
        m = X.shape[0]
        depth = X.shape[1]
    n = Y.shape[1]
    for q in range(RM2):
        acc[q] = 0.0
    for t0 in range(0, depth, BK):
        for ell in range(LOADS):
            e = tid + TB * TB * ell
            if trans_x:            # X is (depth, m): read along m (coalesced)
                tt = e // BM
                rr = e % BM
                ok = t0 + tt < depth and r0 + rr < m
                sX[tt, rr] = X[t0 + tt, r0 + rr] if ok else 0.0
            else:                  # X is (m, depth): read along depth (coalesced)
                rr = e // BK
                tt = e % BK
                ok = r0 + rr < m and t0 + tt < depth
                sX[tt, rr] = X[r0 + rr, t0 + tt] if ok else 0.0
            tt = e // BM
            ss = e % BM
            ok = t0 + tt < depth and s0 + ss < n
            sY[tt, ss] = Y[t0 + tt, s0 + ss] if ok else 0.0
        cuda.syncthreads()
        for tt in range(BK):
            for ii in range(RM):
                x = sX[tt, ty + TB * ii]
                for jj in range(RM):
                    acc[ii * RM + jj] += x * sY[tt, tx + TB * jj]
        cuda.syncthreads()


@cuda.jit
def _full_features(z, u, MT, c, p, k0, Psi):
    """Ψ[r] = ψ'_k = [φ(h_k); 1; u_k; z_k] for the chunk's samples k = k0 + r, h_k = M z_k + c.

    With Θ' = [W, b − c, B_in, −M], τ F_k = −h_k + W φ(h_k) + b + B_in u_k = Θ' ψ'_k: the
    network's drift for a whole chunk is one GEMM, and ∂L/∂[W, b, B_in] is the first N + 1 + p
    rows of Ψᵀ G (docs/model.md §4d; its features ψ plus z, which carries −h's linear part).
    """
    i, r = cuda.grid(2)
    N = c.shape[0]
    d = z.shape[1]
    if r < Psi.shape[0] and i < N + 1 + p + d:
        k = k0 + r
        if i < N:
            h = c[i]
            for j in range(d):
                h += MT[j, i] * z[k, j]
            Psi[r, i] = phi(h)
        elif i == N:
            Psi[r, i] = 1.0
        elif i < N + 1 + p:
            Psi[r, i] = u[k, i - N - 1]
        else:
            Psi[r, i] = z[k, i - N - 1 - p]


@cuda.jit
def _gemm_nn(X, Y, C, scale):
    """C = scale · X Y (tiled). Used for τ F = Ψ Θ'ᵀ (scale 1/τ) and [F⊥, F Pᵀ] = F [Q, Pᵀ]."""
    sX = cuda.shared.array((BK, BMP), float64)
    sY = cuda.shared.array((BK, BMP), float64)
    acc = cuda.local.array(RM2, float64)
    _tile_product(X, Y, False, sX, sY, acc)
    for ii in range(RM):
        r = cuda.blockIdx.y * BM + cuda.threadIdx.y + TB * ii
        for jj in range(RM):
            s = cuda.blockIdx.x * BM + cuda.threadIdx.x + TB * jj
            if r < C.shape[0] and s < C.shape[1]:
                C[r, s] = acc[ii * RM + jj] * scale


@cuda.jit
def _gemm_tn(X, Y, C, accumulate):
    """C = Xᵀ Y, or C += Xᵀ Y when accumulate (used for ∂L/∂Θᵀ += Ψᵀ G over sample chunks; each
    element has one owner thread, so accumulation across launches needs no atomics)."""
    sX = cuda.shared.array((BK, BMP), float64)
    sY = cuda.shared.array((BK, BMP), float64)
    acc = cuda.local.array(RM2, float64)
    _tile_product(X, Y, True, sX, sY, acc)
    for ii in range(RM):
        r = cuda.blockIdx.y * BM + cuda.threadIdx.y + TB * ii
        for jj in range(RM):
            s = cuda.blockIdx.x * BM + cuda.threadIdx.x + TB * jj
            if r < C.shape[0] and s < C.shape[1]:
                if accumulate:
                    C[r, s] += acc[ii * RM + jj]
                else:
                    C[r, s] = acc[ii * RM + jj]


@cuda.jit
def _full_residual_grad(FpR, f, lam, P, k0, lam_perp, coef, G):
    """G[r, i] = (2/(K τ)) [ Σ_a P[a, i] Λ_a r_ka + λ⊥ F⊥_ki ] = (1/τ) ∂L/∂F_k, with
    F⊥_k = (F Q)[r] = FpR[r, :N] and r_k = (F Pᵀ)[r] − f_k = FpR[r, N:] − f_k."""
    i, r = cuda.grid(2)
    N = P.shape[1]
    if r < G.shape[0] and i < N:
        k = k0 + r
        s = 0.0
        for a in range(P.shape[0]):
            s += lam[a] * (FpR[r, N + a] - f[k, a]) * P[a, i]
        G[r, i] = (s + lam_perp * FpR[r, i]) * coef


@cuda.jit
def _full_loss(FpR, f, lam, k0, lam_perp, N, part, block0):
    """part[block0 + block] = Σ over the block's samples of Σ_a Λ_a r_ka² + λ⊥ ‖F⊥_k‖²
    (ROWS samples × LANES neuron lanes; lane 0 adds the lanes' parts of ‖F⊥_k‖² in order)."""
    t = cuda.threadIdx.x
    lane = t % LANES
    row = t // LANES
    r = cuda.blockIdx.x * ROWS + row
    nk = FpR.shape[0]
    d = lam.shape[0]
    acc = cuda.shared.array((ROWS, 1, LANES), float64)
    sample = cuda.shared.array(ROWS, float64)
    s = 0.0
    if r < nk:
        for i in range(lane, N, LANES):
            s += FpR[r, i] * FpR[r, i]
    acc[row, 0, lane] = s
    cuda.syncthreads()
    if lane == 0:
        loss = 0.0
        if r < nk:
            for a in range(d):
                ra = FpR[r, N + a] - f[k0 + r, a]
                loss += lam[a] * ra * ra
            loss += lam_perp * _lane_sum(acc, row, 0)
        sample[row] = loss
    cuda.syncthreads()
    if t == 0:
        tot = 0.0
        for q in range(ROWS):
            tot += sample[q]
        part[block0 + cuda.blockIdx.x, 0] = tot


def _full_chunk(K, N, p, d):
    """Samples per chunk: as many as FULL_SCRATCH_BYTES allows, a multiple of ROWS (so that loss
    blocks never straddle chunks), at most K rounded up."""
    per_sample = 8 * ((N + 1 + p + d) + N + (N + d))
    chunk = max(ROWS, (FULL_SCRATCH_BYTES // per_sample) // ROWS * ROWS)
    return min(chunk, _blocks(K, ROWS) * ROWS)


def full_drift_loss_grad(z, u, f, lam, WT, b, BinT, MT, c, P, Q, lam_perp, tau):
    """Full-connectivity drift loss (docs/model.md §3b, §4d) and its gradient in W, b, B_in, on the
    GPU.

    Same values as ``cpu.full_drift_loss_grad``. With h_k = M z_k + c (fixed embedding),
    ψ_k = [φ(h_k); 1; u_k], Θ = [W, b, B_in] and F_k = (1/τ) [Θ ψ_k − h_k]:
        r_k = P F_k − f_k,   F⊥_k = Q F_k
        L   = (1/K) Σ_k [ Σ_a Λ_a r_ka² + λ⊥ ‖F⊥_k‖² ]
        g_k = ∂L/∂F_k = (2/K) [ Pᵀ (Λ ⊙ r_k) + λ⊥ F⊥_k ]      (Q symmetric idempotent)
        ∂L/∂Θ = (1/τ) Σ_k g_k ψ_kᵀ,  i.e. ∂L/∂W = (1/τ) Σ g_k φ(h_k)ᵀ, ∂L/∂b = (1/τ) Σ g_k,
        ∂L/∂B_in = (1/τ) Σ g_k u_kᵀ.
    Returns (L, ∂L/∂Wᵀ, ∂L/∂b, ∂L/∂B_inᵀ) as host arrays. ``z`` may be a ``DeviceDriftData``.

    Layout: three tiled GEMMs per chunk of samples (O(chunk · N²) each, where the GPU pays), with
    features ψ'_k = [φ(h_k); 1; u_k; z_k] (rows of Ψ) and Θ' = [W, b − c, B_in, −M], so that
    τ F_k = Θ' ψ'_k (the −h_k = −M z_k − c term folded into the product):
        F          = (1/τ) Ψ Θ'ᵀ                 (chunk × N)
        [F⊥, F Pᵀ] = F [Q, Pᵀ]                   (chunk × (N + d))
        ∂L/∂Θᵀ    (+)= Ψ[:, :N+1+p]ᵀ G,  G = g/τ  ((N + 1 + p) × N: ∂L/∂b and ∂L/∂B_in are the
                                                   rows of the constant and input features)
    plus elementwise kernels for Ψ and G and a per-sample loss reduction (ROWS samples × LANES
    neuron lanes, shared-memory sums in fixed order). The GEMMs are 64 × 64 output tiles per block of 16 × 16
    threads, 4 × 4 outputs per thread in registers, staged through shared memory 16 deep.
    Chunks keep device memory at O(chunk · N) (FULL_SCRATCH_BYTES), never K × N; ∂L/∂Θᵀ
    accumulates over chunks in place (one owner thread per element).
    """
    data = _device_data(z, u, f, lam)
    K, d, p = data.K, data.d, data.p
    WT = _host(WT, "WT", (None, None))
    N = WT.shape[0]
    if N == 0:
        raise DDMError("WT is empty: the network needs at least one neuron")
    WT = _host(WT, "WT", (N, N))
    b = _host(b, "b", (N,))
    BinT = _host(BinT, "BinT", (p, N)) if p else np.zeros((0, N))
    MT = _host(MT, "MT", (d, N))
    c = _host(c, "c", (N,))
    P = _host(P, "P", (d, N))
    Q = _host(Q, "Q", (N, N))
    lam_perp = float(lam_perp)
    tau = float(tau)
    n_psi = N + 1 + p      # rows of ∂L/∂Θᵀ = [∂L/∂Wᵀ; ∂L/∂bᵀ; ∂L/∂B_inᵀ]
    n_feat = n_psi + d     # ψ' = [φ(h); 1; u; z]
    shapes = [(n_feat, N), (N, N + d), (d, N), (d, N), (N,)]
    ThetaT = np.concatenate([WT.ravel(), b - c, BinT.ravel(), -MT.ravel()])   # Θ'ᵀ
    QPT = np.concatenate([Q, P.T], axis=1)
    packed = np.concatenate([ThetaT, QPT.ravel(), P.ravel(), MT.ravel(), c])
    dThetaT, dQPT, dP, dMT, dc = _views(data.upload("full.theta", packed), shapes)

    chunk = _full_chunk(K, N, p, d)
    Psi_buf = data.scratch("full.Psi", (chunk, n_feat))
    F_buf = data.scratch("full.F", (chunk, N))
    FpR_buf = data.scratch("full.FpR", (chunk, N + d))
    part = data.scratch("full.part", (_blocks(K, ROWS), 1))
    out = data.scratch("full.out", (1 + n_psi * N,))
    gThetaT = out[1:].reshape(n_psi, N)
    coef = 2.0 / (K * tau)

    ew_block = (32, 8)   # elementwise kernels: x over neurons (coalesced), y over samples
    for k0 in range(0, K, chunk):
        nk = min(chunk, K - k0)
        Psi = Psi_buf[:nk]
        F = F_buf[:nk]
        FpR = FpR_buf[:nk]
        _full_features[(_blocks(n_feat, 32), _blocks(nk, 8)), ew_block](
            data.z, data.u, dMT, dc, p, k0, Psi)
        _gemm_nn[(_blocks(N, BM), _blocks(nk, BM)), (TB, TB)](Psi, dThetaT, F, 1.0 / tau)
        _gemm_nn[(_blocks(N + d, BM), _blocks(nk, BM)), (TB, TB)](F, dQPT, FpR, 1.0)
        _full_loss[_blocks(nk, ROWS), ROWS * LANES](
            FpR, data.f, data.lam, k0, lam_perp, N, part, k0 // ROWS)
        # G overwrites F: F is not needed once F [Q, Pᵀ] is formed
        _full_residual_grad[(_blocks(N, 32), _blocks(nk, 8)), ew_block](
            FpR, data.f, data.lam, dP, k0, lam_perp, coef, F)
        # the z columns of Ψ are left out: their rows of Ψᵀ G would be ∂L/∂(−M), not wanted here
        _gemm_tn[(_blocks(N, BM), _blocks(n_psi, BM)), (TB, TB)](
            Psi[:, :n_psi], F, gThetaT, k0 > 0)
    _launch_sum_rows(part, out, 0)
    flat = out.copy_to_host()

    loss = flat[0] / K
    g = flat[1:].reshape(n_psi, N)
    return loss, g[:N].copy(), g[N].copy(), g[N + 1:].copy()

