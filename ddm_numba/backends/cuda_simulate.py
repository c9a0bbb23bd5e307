"""CUDA kernels (numba.cuda): Euler–Maruyama simulation of the network (docs/model.md §1, §6, §7).

The GPU twin of ``cpu.simulate_network``: same arguments, same results. With the same seed a trial
follows the same path on both backends, to rounding in float64, because each trial draws from the
same xoroshiro128+ stream (rng.py) in the same order:

    each step: the m latent normals ξ (pairs, Box–Muller), then, if σ_p > 0, the N private
    normals η (pairs; for odd N the last pair's second value is dropped).

Layout: one thread block per trial, TPB threads (a compile-time constant, a power of two ≤ 256)
striding over the neurons, i = t, t + TPB, ...; the trial's state x lives in a device work array
of shape (trials, N), so N is not limited. A step:

    1. thread 0 draws ξ (m normals) and, for private noise, the 2·⌈N/2⌉ raw uint64 words of η;
    2. every thread computes φ(x_i) for its neurons and its partial sums of A φ (low-rank) and of
       R[:, q, :] φ (state-dependent noise); a shared-memory tree reduction adds them up (no warp
       shuffles: they do not exist in the CUDA simulator, where these kernels are tested);
    3. the threads turn the raw words into η in parallel, pair k by thread k mod TPB;
    4. full W only: W φ, tiled: φ is staged TPB values at a time in shared memory and each thread
       accumulates its rows from Wᵀ (read coalesced: consecutive threads, consecutive i);
    5. thread 0 forms the latent increment l = (dt/τ) A φ + √dt S(x) ξ (d values, shared);
    6. every thread updates its neurons: x_i += (dt/τ)(b_i + B_in u − x_i [+ (W φ)_i]) + M_i l
       + σ_p √dt η_i.
Recording (every `every` steps): z = P (x − c), reduced the same way; a non-finite z stops the trial
with blowup[trial] = that step, exactly as on the CPU.

The price of bit-parity with the CPU is step 1: one stream per trial is inherently sequential, so
one thread advances it 2·⌈N/2⌉ + m times per step while the others wait. We keep that serial part
to the cheap integer xoroshiro step; the expensive Box–Muller transform (log, sqrt, sin, cos in
float64) of the private normals runs in parallel in step 3, by replaying the recorded words
through the very same ``rng.normal_pair`` code (see ``_pop``). Left for later: several trials per
block, sharing each read of W (full W is O(N²) reads a trial and step), and per-thread jump-ahead
of the stream (identical numbers without the serial part, at a 128×128 GF(2) product a pair).

Limits: d ≤ MAX_D and m ≤ MAX_M, because the reduction buffers and S(x) live in shared memory,
whose size must be a compile-time constant. The number of inputs p has no limit (u(t) is read from
global memory) and neither has N. Larger models: use the CPU backend.

float32: the state, the weights and the arithmetic are float32; random numbers are generated in
float64 exactly as on the CPU and then rounded, so a float32 path shadows the float64 one to
float32 rounding (about 2e-7 after 15 steps in tests/cuda/test_cuda_simulate.py). The activation
is then ``math.tanh`` (CUDA's tanhf): ``_jit.phi_em`` would compute in float64, its literals
being float64. In float64 the activation is ``_jit.phi_em``, the CPU sampler's (docs/model.md §6).
"""
import functools
import math
import types

import numpy as np
from numba import cuda, float32, float64

from .. import _jit, rng
from ..errors import DDMError

MAX_D = 8    # latent dimensions: rows of the shared reduction buffer
MAX_M = 8    # latent noise channels: ξ and S(x) in shared memory
DEFAULT_TPB = 128
# ptxas (CUDA 13, sm_75 and sm_90) gives the kernel 133–168 registers a thread: a block of 512
# would need more than the 65536 registers a block may have, and in float64 its reduction buffer
# alone (MAX_D × 512 × 8 bytes) would fill the 48 KiB of static shared memory.
MAX_TPB = 256


def _device(func, **rebind):
    """A CUDA device function compiled from the Python source of the njit kernel `func`.

    One implementation of the maths (docs/model.md §7): we do not copy the source, we compile the
    CPU kernel's own Python function (``func.py_func``) for the GPU. A CUDA function cannot call a
    CPU dispatcher, so the names `func` calls (``rng.uniform`` calls ``next_uint64``, which calls
    ``_rotl``) must name CUDA device functions instead: we rebuild the function object around the
    same code with a copy of its module's globals in which those names are rebound (`rebind`),
    and build the chain in dependency order. The module rng.py itself is left untouched.
    """
    py = func.py_func
    namespace = dict(py.__globals__)
    namespace.update(rebind)
    clone = types.FunctionType(py.__code__, namespace, py.__name__, py.__defaults__,
                               py.__closure__)
    clone.__doc__ = py.__doc__
    return cuda.jit(device=True)(clone)


_rotl = _device(rng._rotl)
next_uint64 = _device(rng.next_uint64, _rotl=_rotl)
normal_pair = _device(rng.normal_pair, uniform=_device(rng.uniform, next_uint64=next_uint64))


@cuda.jit(device=True)
def _floor(y):
    return math.floor(y)


# Inside phi, the CPU writes 2ⁿ into exponent bits with an LLVM intrinsic and floors with np.floor;
# CUDA (and the simulator, which runs Python) use the exact arithmetic 2ⁿ and math.floor. Same
# values.
phi = _device(_jit.phi, _exp2_int=_device(_jit.exp2_int), _floor=_floor)
# the sampler's activation, as on the CPU (``_jit.phi_em``: tanh to 1.1e-6, plain arithmetic)
phi_em = _device(_jit.phi_em)


@cuda.jit(device=True)
def _pop(words, k):
    """Stand-in for ``next_uint64`` that replays recorded draws: row k of `words` holds two words
    drawn from a trial's stream; return the first and move the second up. ``rng.normal_pair``
    compiled with this in place of ``next_uint64`` (``normal_from_words``) turns row k into
    exactly the two normals the stream itself would have given."""
    w = words[k, 0]
    words[k, 0] = words[k, 1]
    return w


normal_from_words = _device(rng.normal_pair, uniform=_device(rng.uniform, next_uint64=_pop))


@cuda.jit(device=True)
def tanh32(x):
    """φ = tanh in float32 (CUDA's tanhf), for float32 kernels."""
    return math.tanh(x)


@functools.lru_cache(maxsize=None)
def _kernel(tpb, precision):
    """The simulation kernel for TPB = `tpb` threads per block and `precision` ("float64" or
    "float32"); shared-array shapes and the float type must be compile-time constants, hence a
    kernel per pair, compiled on first launch."""
    TPB = tpb
    F = float64 if precision == "float64" else float32
    act = phi_em if precision == "float64" else tanh32

    @cuda.jit(device=True)
    def block_sum(red, rows, t):
        """red[r, 0] ← Σ_t red[r, t] for r < rows (tree over the TPB threads; all must call)."""
        cuda.syncthreads()
        s = TPB // 2
        while s > 0:
            if t < s:
                for r in range(rows):
                    red[r, t] += red[r, t + s]
            cuda.syncthreads()
            s //= 2

    @cuda.jit
    def simulate(work, net, run, paths):
        """Euler–Maruyama for trial blockIdx.x (docs/model.md §1, §3, §6), in place on x[trial]:

            x ← x + (dt/τ) [ −x + W φ(x) + b + B_in u(t) ] + √dt ( M S(x) ξ + σ_p η ),
            ξ ~ N(0, I_m), η ~ N(0, I_N),  S(x) = S0 + Σ_j R[:, :, j] φ_j(x),
        with W φ = M (A φ) in low-rank mode (full = False) and Wᵀ given in full mode. Records
        z = P (x − c) (and x if save_x) at steps 0, every, 2·every, ...; blowup[trial] = the first
        recorded step whose z is not finite (the trial stops there), else −1.
        net, run, paths: backends.arrays' NetworkArrays, RunSettings and PathArrays of device
        arrays and scalars in the working precision. ``work``: what the host derives for the
        kernel, the work arrays (device, a row per trial: words (⌈N/2⌉, 2) uint64, eta (N,),
        drive (N,), ph (N,)), p and m (zero-size arrays travel as one zero element) and √dt.
        """
        words, eta, drive, ph, p, m, sqdt = work
        MT, c, A, WT, full, b, BinT, S0, R, has_R, sigma_p, P, tau = net
        U, dt, n_steps, every, save_x = run
        x, states, z_out, x_out, blowup = paths
        tr = cuda.blockIdx.x
        t = cuda.threadIdx.x
        N = x.shape[1]
        d = MT.shape[0]
        n_pairs = (N + 1) // 2
        red = cuda.shared.array((MAX_D, TPB), F)   # per-thread partial sums, one row per output
        tile = cuda.shared.array(TPB, F)           # φ, staged for the full W φ
        xi = cuda.shared.array(MAX_M, F)           # ξ (thread 0 only)
        latent = cuda.shared.array(MAX_D, F)       # A φ (thread 0 only)
        S = cuda.shared.array((MAX_D, MAX_M), F)   # S(x) (thread 0 only)
        incr = cuda.shared.array(MAX_D, F)         # the latent increment l, read by all threads
        stop = cuda.shared.array(1, np.int32)
        h = dt / tau
        private = sigma_p * sqdt
        trial_words = words[tr]
        if t == 0:
            blowup[tr] = -1
        for step in range(n_steps + 1):
            if step % every == 0:
                rec = step // every
                for a in range(d):
                    s = F(0.0)
                    for i in range(t, N, TPB):
                        s += P[a, i] * (x[tr, i] - c[i])
                    red[a, t] = s
                block_sum(red, d, t)
                if t == 0:
                    stop[0] = 0
                    for a in range(d):
                        za = red[a, 0]
                        z_out[tr, rec, a] = za
                        if not math.isfinite(za):
                            stop[0] = 1
                    if stop[0] != 0:
                        blowup[tr] = step
                if save_x:
                    for i in range(t, N, TPB):
                        x_out[tr, rec, i] = x[tr, i]
                cuda.syncthreads()
                if stop[0] != 0:   # the same value in every thread: the whole block leaves
                    break
            if step == n_steps:
                break
            # 1. this step's random numbers, in the CPU's order: ξ, then the words of η
            if t == 0:
                j = 0
                while j < m:
                    g1, g2 = normal_pair(states, tr)
                    xi[j] = g1
                    if j + 1 < m:
                        xi[j + 1] = g2
                    j += 2
                if sigma_p > 0:
                    for k in range(n_pairs):
                        trial_words[k, 0] = next_uint64(states, tr)
                        trial_words[k, 1] = next_uint64(states, tr)
            # 2. φ(x) and the reductions A φ (low-rank) and R[:, q, :] φ (state-dependent noise)
            for a in range(d):
                red[a, t] = F(0.0)
            for i in range(t, N, TPB):
                pi = act(x[tr, i])
                ph[tr, i] = pi
                if not full:
                    for a in range(d):
                        red[a, t] += A[a, i] * pi
            if not full:
                block_sum(red, d, t)
                if t == 0:
                    for a in range(d):
                        latent[a] = red[a, 0]
            for q in range(m):
                if has_R:
                    # thread 0 copied red[:, 0] (its own slot) out before overwriting it
                    for a in range(d):
                        s = F(0.0)
                        for i in range(t, N, TPB):
                            s += R[a, q, i] * ph[tr, i]
                        red[a, t] = s
                    block_sum(red, d, t)
                if t == 0:
                    for a in range(d):
                        S[a, q] = S0[a, q] + red[a, 0] if has_R else S0[a, q]
            # 3. η from the words thread 0 wrote: they are visible once a syncthreads lies
            #    between, which the reductions of 2 provide unless there were none
            if sigma_p > 0:
                if full and not (has_R and m > 0):
                    cuda.syncthreads()
                for k in range(t, n_pairs, TPB):
                    g1, g2 = normal_from_words(trial_words, k)
                    eta[tr, 2 * k] = g1
                    if 2 * k + 1 < N:
                        eta[tr, 2 * k + 1] = g2
            # 4. full W: drive = b + B_in u + W φ, φ staged in shared memory TPB values at a time
            if full:
                for i in range(t, N, TPB):
                    acc = b[i]
                    for q in range(p):
                        uq = U[step, q]
                        if uq != 0:
                            acc += BinT[q, i] * uq
                    drive[tr, i] = acc
                for j0 in range(0, N, TPB):
                    if j0 + t < N:
                        tile[t] = ph[tr, j0 + t]   # written by this same thread in 2
                    cuda.syncthreads()
                    width = min(TPB, N - j0)
                    for i in range(t, N, TPB):
                        acc = drive[tr, i]
                        for jj in range(width):
                            acc += WT[j0 + jj, i] * tile[jj]
                        drive[tr, i] = acc
                    cuda.syncthreads()
            # 5. the latent increment l = (dt/τ) A φ + √dt S(x) ξ  (full: √dt S(x) ξ)
            if t == 0:
                for a in range(d):
                    s = F(0.0)
                    for q in range(m):
                        s += S[a, q] * xi[q]
                    noise = s * sqdt
                    incr[a] = noise if full else latent[a] * h + noise
            cuda.syncthreads()
            # 6. the update, in the CPU's order of operations
            for i in range(t, N, TPB):
                if full:
                    di = drive[tr, i]
                else:
                    di = b[i]
                    for q in range(p):
                        uq = U[step, q]
                        if uq != 0:
                            di += BinT[q, i] * uq
                xv = x[tr, i]
                xv += h * (di - xv)
                for a in range(d):
                    xv += MT[a, i] * incr[a]
                if sigma_p > 0:
                    xv += private * eta[tr, i]
                x[tr, i] = xv
            # A guard, not a need today: every shared or work value read in this step is next
            # rewritten after a barrier of the next step (the reductions of 2, the η barrier of
            # 3, the tile barriers of 4). One barrier a step keeps later edits safe; the CUDA
            # simulator cannot catch a missing one (its threads do not race adversarially).
            cuda.syncthreads()

    return simulate


def _pow2(n):
    return 1 << max(0, int(n) - 1).bit_length()


def simulate_network(net, run, paths, dtype=np.float64, threads_per_block=None):
    """Euler–Maruyama for the network on a CUDA GPU; the twin of ``cpu.simulate_network``
    (docs/model.md §6–7): the same arguments (backends.arrays' NetworkArrays, RunSettings,
    PathArrays) and the same results, written into paths.z_out, paths.x_out (if run.save_x) and
    paths.blowup, with paths.x left holding the final states and paths.states advanced in place.
    Returns paths.blowup.

    dtype: np.float64 (paths equal to the CPU's to rounding) or np.float32 (state, weights and
    arithmetic in float32; the same random numbers, rounded). threads_per_block: a power of two
    ≤ MAX_TPB; default: the smallest power of two ≥ N, between 32 and DEFAULT_TPB.
    """
    precision = np.dtype(dtype)
    if precision not in (np.float64, np.float32):
        raise DDMError(f"CUDA simulation runs in float64 or float32, not {precision}")
    n_trials, N = paths.x.shape
    d, m, p = net.MT.shape[0], net.S0.shape[1], net.BinT.shape[0]
    if d > MAX_D or m > MAX_M:
        raise DDMError(f"the CUDA kernels handle d <= {MAX_D} latent dimensions and m <= {MAX_M} "
                       f"noise channels (this network: d = {d}, m = {m}); use the CPU backend "
                       "(device='cpu', --device cpu)")
    if threads_per_block is None:
        tpb = min(DEFAULT_TPB, max(32, _pow2(N)))
    else:
        tpb = int(threads_per_block)
        if tpb < 1 or tpb > MAX_TPB or tpb & (tpb - 1):
            raise DDMError(f"threads_per_block must be a power of two in [1, {MAX_TPB}], "
                           f"got {tpb}")
    states = paths.states
    if states.shape != (n_trials, 2) or states.dtype != np.uint64:
        raise DDMError(f"states must be a ({n_trials}, 2) uint64 array (rng.make_states)")
    if n_trials == 0:
        return paths.blowup
    real = precision.type

    def dev(a):
        """A device copy in the working precision; zero-size arrays (p = 0, m = 0) become one
        zero element, since the kernel is told p and m and never reads them."""
        a = np.ascontiguousarray(a, dtype=precision)
        return cuda.to_device(a if a.size else np.zeros((1,) * a.ndim, precision))

    full, sigma_p, save_x = bool(net.full), float(net.sigma_p), bool(run.save_x)
    n_pairs = (N + 1) // 2
    # (the kernel takes the view words[trial] whether or not it uses it: one row per trial)
    work = (cuda.device_array((n_trials, n_pairs if sigma_p > 0 else 1, 2), np.uint64),
            cuda.device_array((n_trials, N) if sigma_p > 0 else (1, 1), precision),
            cuda.device_array((n_trials, N) if full else (1, 1), precision),
            cuda.device_array((n_trials, N), precision), p, m, real(np.sqrt(run.dt)))
    # only one of A and Wᵀ is read; R only when has_R
    d_net = net._replace(
        MT=dev(net.MT), c=dev(net.c), A=dev(net.A) if not full else dev(np.zeros((1, 1))),
        WT=dev(net.WT) if full else dev(np.zeros((1, 1))), full=full, b=dev(net.b),
        BinT=dev(net.BinT), S0=dev(net.S0),
        R=dev(net.R) if net.has_R else dev(np.zeros((1, 1, 1))), has_R=bool(net.has_R),
        sigma_p=real(sigma_p), P=dev(net.P), tau=real(net.tau))
    d_run = run._replace(U=dev(run.U), dt=real(run.dt), n_steps=int(run.n_steps),
                         every=int(run.every), save_x=save_x)
    d_paths = paths._replace(
        x=dev(paths.x), states=cuda.to_device(np.ascontiguousarray(states)), z_out=dev(paths.z_out),
        x_out=dev(paths.x_out) if save_x else cuda.device_array((1, 1, 1), precision),
        blowup=cuda.to_device(np.ascontiguousarray(paths.blowup, dtype=np.int64)))
    _kernel(tpb, precision.name)[n_trials, tpb](work, d_net, d_run, d_paths)
    states[...] = d_paths.states.copy_to_host()
    paths.x[...] = d_paths.x.copy_to_host()   # the final states: a run goes on in chunks
    paths.z_out[...] = d_paths.z_out.copy_to_host()
    if save_x:
        paths.x_out[...] = d_paths.x_out.copy_to_host()
    paths.blowup[...] = d_paths.blowup.copy_to_host()
    return paths.blowup
