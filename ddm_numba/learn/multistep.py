"""Multi-step ("shooting") loss for a low-rank network's latent drift, with its gradient by the
discrete adjoint of RK4. Symbols as in docs/model.md §3a.

Why: the drift loss of docs/model.md §4 needs the target drift f(z) at sample points. When all we
have are coarsely sampled trajectories, the one-step increment (z(t+Δ) − z(t))/Δ is a biased
estimate of f once Δ is not small. Integrating the network's own latent flow over Δ and comparing
end points removes that bias: the fit is of the flow map, not of a finite difference.

Model (autonomous, no input), h_ = M z + c, φ = tanh:

    f(z) = (1/τ) [ −z + A φ(M z + c) + b_z ],     A (d, N), b_z (d,), M (N, d), c (N,), τ > 0.

Data: B pairs (z0_b, z_obs_b); z_obs_b was observed Δ = n·h after z0_b.

Forward, per pair: z⁽⁰⁾ = z0, z⁽ᵏ⁺¹⁾ = Φ_h(z⁽ᵏ⁾) (one classical RK4 step), k = 0..n−1, where

    y1 = z,              k1 = f(y1)
    y2 = z + (h/2) k1,   k2 = f(y2)
    y3 = z + (h/2) k2,   k3 = f(y3)
    y4 = z + h k3,       k4 = f(y4)
    Φ_h(z) = z + (h/6) (k1 + 2 k2 + 2 k3 + k4).

Loss (drift units, like the increment loss (Δz/Δ − f)²):

    L = (1/B) Σ_b Σ_a Λ_a (z⁽ⁿ⁾_ba − z_obs,ba)² / Δ²  +  reg ‖A‖²_F.

Gradient by the discrete adjoint. We differentiate the discrete map itself (reverse mode through
every RK4 stage), not a discretization of the continuous adjoint ODE, so the result is the exact
gradient of L as computed, equal to finite differences up to rounding.

  Terminal cotangent:  λ⁽ⁿ⁾ = ∂L/∂z⁽ⁿ⁾ = (2 / (B Δ²)) Λ ⊙ (z⁽ⁿ⁾ − z_obs)   (per pair).

  One step backwards. Given λ' = ∂L/∂z⁽ᵏ⁺¹⁾, walk the step's graph in reverse. Each stage k_i
  feeds z⁽ᵏ⁺¹⁾ with weight (h/6)(1, 2, 2, 1)_i and the next stage point y_{i+1} with weight
  (h/2, h/2, h)_i; each y_i depends on z with the identity and on k_{i−1}. Writing
  J_i = ∂f/∂z at y_i and x̄ for ∂L/∂x:

      k̄4 = (h/6) λ'                    ȳ4 = J_4ᵀ k̄4
      k̄3 = (h/3) λ' + h ȳ4             ȳ3 = J_3ᵀ k̄3
      k̄2 = (h/3) λ' + (h/2) ȳ3         ȳ2 = J_2ᵀ k̄2
      k̄1 = (h/6) λ' + (h/2) ȳ2         ȳ1 = J_1ᵀ k̄1
      λ⁽ᵏ⁾ = λ' + ȳ1 + ȳ2 + ȳ3 + ȳ4      (= (∂Φ_h/∂z)ᵀ λ')

  and each stage adds its parameter part, θ̄ += (∂f/∂θ at y_i)ᵀ k̄_i, for θ = A, b_z, M, c.

  Vector–Jacobian products of f at a point y with cotangent μ (d,): with h_ = M y + c,
  φ' = 1 − φ², and s = (Aᵀ μ) ⊙ φ'(h_) (N,),

      μᵀ df = (1/τ) [ −μᵀ dy + μᵀ dA φ + μᵀ db_z + sᵀ (dM y + M dy + dc) ]

  so  μᵀ ∂f/∂y = (1/τ)(−μ + Mᵀ s),   ∂/∂A = (1/τ) μ φᵀ,   ∂/∂b_z = (1/τ) μ,
      ∂/∂M = (1/τ) s yᵀ,              ∂/∂c = (1/τ) s        (summed over pairs, stages, steps),
  and the ridge adds 2 reg A to ∂L/∂A.

Cost: O(B n N d) time. The backward pass needs φ(h_) at all 4n stage points of a pair; we keep
them for one pair at a time (4 n N floats per thread, e.g. 160 kB at n = 20, N = 256) instead of
for the batch, so memory is O(n N) per thread plus O(N d) per block of pairs. Pairs go through
in chunks of CHUNK, each split into blocks of BLOCK pairs; per-block partial sums are added in
block order, so results are bit-identical whatever the thread count.
"""
import numbers

import numpy as np
from numba import prange

from .._jit import kernel, phi
from ..errors import DDMError

BLOCK = 256
CHUNK = 65536
# Same fast-math set as backends/cpu.py: reassociation lets dot products vectorize; no nnan/ninf,
# so non-finite values still show and are caught.
_FAST = {"nsz", "arcp", "contract", "afn", "reassoc"}


# --------------------------------------------------------------------------------------------
# kernels (one pair at a time; embeddings passed transposed, MT = Mᵀ (d, N), so loops over
# neurons are unit-stride)
# --------------------------------------------------------------------------------------------

@kernel(fastmath=_FAST)
def _stage(y, A, b_z, MT, c, inv_tau, ph, k):
    """ph = φ(M y + c) (N,),  k = f(y) = (1/τ)(−y + A ph + b_z) (d,)."""
    N = c.shape[0]
    d = y.shape[0]
    for i in range(N):
        ph[i] = c[i]
    for j in range(d):
        yj = y[j]
        row = MT[j]
        for i in range(N):
            ph[i] += row[i] * yj
    for i in range(N):
        ph[i] = phi(ph[i])
    for a in range(d):
        row = A[a]
        s = 0.0
        for i in range(N):
            s += row[i] * ph[i]
        k[a] = inv_tau * (s + b_z[a] - y[a])


@kernel(fastmath=_FAST)
def _rk4_pair(z, A, b_z, MT, c, inv_tau, h, n, Y, PH, K):
    """Integrate one pair in place: z ← Φ_h^n(z). Stores the stage points Y[k, i] (d,) and the
    rates PH[k, i] = φ(M Y[k, i] + c) (N,) for the backward pass (i = 0..3 are stages 1..4)."""
    d = z.shape[0]
    hh = 0.5 * h
    h6 = h / 6.0
    for step in range(n):
        y = Y[step, 0]
        for a in range(d):
            y[a] = z[a]
        _stage(y, A, b_z, MT, c, inv_tau, PH[step, 0], K[0])
        y = Y[step, 1]
        for a in range(d):
            y[a] = z[a] + hh * K[0, a]
        _stage(y, A, b_z, MT, c, inv_tau, PH[step, 1], K[1])
        y = Y[step, 2]
        for a in range(d):
            y[a] = z[a] + hh * K[1, a]
        _stage(y, A, b_z, MT, c, inv_tau, PH[step, 2], K[2])
        y = Y[step, 3]
        for a in range(d):
            y[a] = z[a] + h * K[2, a]
        _stage(y, A, b_z, MT, c, inv_tau, PH[step, 3], K[3])
        for a in range(d):
            z[a] += h6 * (K[0, a] + 2.0 * K[1, a] + 2.0 * K[2, a] + K[3, a])


@kernel(fastmath=_FAST)
def _vjp(y, ph, mu, A, MT, inv_tau, s, ybar, gA, gbz, gMT, gc):
    """Vector–Jacobian product of f at y with cotangent mu (module docstring):
        ybar = μᵀ ∂f/∂y = (1/τ)(−μ + Mᵀ s),   s = (Aᵀ μ) ⊙ (1 − φ²),
    and the parameter parts WITHOUT the common factor 1/τ (applied once, after the reduction):
        gA += μ φᵀ,  gbz += μ,  gMT += y sᵀ (= (s yᵀ)ᵀ),  gc += s."""
    N = ph.shape[0]
    d = y.shape[0]
    for i in range(N):
        s[i] = 0.0
    for a in range(d):
        ma = mu[a]
        row = A[a]
        grow = gA[a]
        gbz[a] += ma
        for i in range(N):
            s[i] += row[i] * ma
            grow[i] += ma * ph[i]
    for i in range(N):
        s[i] *= 1.0 - ph[i] * ph[i]
        gc[i] += s[i]
    for j in range(d):
        row = MT[j]
        grow = gMT[j]
        yj = y[j]
        acc = 0.0
        for i in range(N):
            acc += row[i] * s[i]
            grow[i] += s[i] * yj
        ybar[j] = inv_tau * (acc - mu[j])


@kernel(fastmath=_FAST)
def _integrate_block(z0, A, b_z, MT, c, inv_tau, h, n, start, stop, out):
    """out[b] = z⁽ⁿ⁾ for pairs b = start..stop−1 (forward map only)."""
    d = z0.shape[1]
    N = c.shape[0]
    Y = np.empty((1, 4, d))
    PH = np.empty((1, 4, N))
    K = np.empty((4, d))
    z = np.empty(d)
    for b in range(start, stop):
        for a in range(d):
            z[a] = z0[b, a]
        # one step at a time, reusing a one-step store: nothing is kept for a backward pass
        for step in range(n):
            _rk4_pair(z, A, b_z, MT, c, inv_tau, h, 1, Y, PH, K)
        for a in range(d):
            out[b, a] = z[a]


@kernel(parallel=True)
def _integrate_kernel(z0, A, b_z, MT, c, inv_tau, h, n, out):
    """out (B, d) ← z⁽ⁿ⁾ for every pair, BLOCK pairs per parallel task."""
    B = z0.shape[0]
    nb = (B + BLOCK - 1) // BLOCK
    for ib in prange(nb):
        _integrate_block(z0, A, b_z, MT, c, inv_tau, h, n, ib * BLOCK, min(B, (ib + 1) * BLOCK),
                         out)


@kernel(fastmath=_FAST)
def _loss_grad_block(pairs, drift, steps, start, stop, grads):
    """Pairs start..stop−1: returns Σ_b Σ_a Λ_a r_ba² (r = z⁽ⁿ⁾ − z_obs) and adds the gradient of
    wscale times that sum, by the discrete adjoint (module docstring), into grads = (gA, gbz,
    gMT (= ∂/∂Mᵀ), gc), WITHOUT the common factor 1/τ of the parameter VJPs.
    pairs = (z0, z_obs, Λ), drift = (A, b_z, Mᵀ, c, 1/τ), steps = (h, n, wscale)."""
    z0, zobs, lam = pairs
    A, b_z, MT, c, inv_tau = drift
    h, n, wscale = steps
    gA, gbz, gMT, gc = grads
    d = z0.shape[1]
    N = c.shape[0]
    h2 = 0.5 * h
    h3 = h / 3.0
    h6 = h / 6.0
    Y = np.empty((n, 4, d))
    PH = np.empty((n, 4, N))
    K = np.empty((4, d))
    z = np.empty(d)
    lamv = np.empty(d)       # λ⁽ᵏ⁺¹⁾ on entry to a backward step
    kap = np.empty(d)        # k̄_i
    ybar = np.empty((4, d))  # ȳ_1..ȳ_4
    s = np.empty(N)
    loss = 0.0
    for b in range(start, stop):
        for a in range(d):
            z[a] = z0[b, a]
        _rk4_pair(z, A, b_z, MT, c, inv_tau, h, n, Y, PH, K)
        for a in range(d):
            r = z[a] - zobs[b, a]
            loss += lam[a] * r * r
            lamv[a] = 2.0 * wscale * lam[a] * r
        for step in range(n - 1, -1, -1):
            # k̄4 = (h/6) λ'
            for a in range(d):
                kap[a] = h6 * lamv[a]
            _vjp(Y[step, 3], PH[step, 3], kap, A, MT, inv_tau, s, ybar[3], gA, gbz, gMT, gc)
            # k̄3 = (h/3) λ' + h ȳ4
            for a in range(d):
                kap[a] = h3 * lamv[a] + h * ybar[3, a]
            _vjp(Y[step, 2], PH[step, 2], kap, A, MT, inv_tau, s, ybar[2], gA, gbz, gMT, gc)
            # k̄2 = (h/3) λ' + (h/2) ȳ3
            for a in range(d):
                kap[a] = h3 * lamv[a] + h2 * ybar[2, a]
            _vjp(Y[step, 1], PH[step, 1], kap, A, MT, inv_tau, s, ybar[1], gA, gbz, gMT, gc)
            # k̄1 = (h/6) λ' + (h/2) ȳ2
            for a in range(d):
                kap[a] = h6 * lamv[a] + h2 * ybar[1, a]
            _vjp(Y[step, 0], PH[step, 0], kap, A, MT, inv_tau, s, ybar[0], gA, gbz, gMT, gc)
            # λ⁽ᵏ⁾ = λ' + ȳ1 + ȳ2 + ȳ3 + ȳ4: z feeds the update and every stage point
            for a in range(d):
                lamv[a] += ybar[0, a] + ybar[1, a] + ybar[2, a] + ybar[3, a]
    return loss


@kernel(parallel=True)
def _loss_grad_kernel(pairs, drift, steps, loss_b, gA_b, gbz_b, gMT_b, gc_b):
    """Block ib of BLOCK pairs writes its partial Σ Λ r² to loss_b[ib] and its partial gradients
    (without 1/τ) to gA_b[ib], gbz_b[ib], gMT_b[ib], gc_b[ib] (zeroed by the caller); pairs,
    drift, steps as for _loss_grad_block. Only the dispatch is parallel: array expressions inside
    a parallel kernel become parfors, each compiled separately, so allocation and the fixed-order
    reduction live in the caller. (The output arrays are arguments of their own: with loss_b
    unpacked from a tuple, numba 0.68 dropped the parfor's stores to it, measured: L = 0.)"""
    B = pairs[0].shape[0]
    for ib in prange(loss_b.shape[0]):
        loss_b[ib] = _loss_grad_block(pairs, drift, steps, ib * BLOCK, min(B, (ib + 1) * BLOCK),
                                      (gA_b[ib], gbz_b[ib], gMT_b[ib], gc_b[ib]))


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------

def _array(x, name, shape, what):
    """x as a C-contiguous float64 array of the given shape (None = any size on that axis)."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise DDMError(f"{name} must be a numeric array {what}; got {type(x).__name__}") from None
    if arr.ndim != len(shape) or any(s is not None and s != t for s, t in zip(shape, arr.shape)):
        want = "(" + ", ".join("?" if s is None else str(s) for s in shape)
        want += ",)" if len(shape) == 1 else ")"
        raise DDMError(f"{name} must have shape {want} {what}; got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise DDMError(f"{name} contains non-finite values (NaN or inf); pass finite numbers")
    return np.ascontiguousarray(arr)


def _scalar(x, name, positive):
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise DDMError(f"{name} must be a real number; got {x!r}") from None
    if not np.isfinite(v) or (v <= 0 if positive else v < 0):
        raise DDMError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}; got {x!r}")
    return v


def _steps(n_steps):
    if isinstance(n_steps, bool) or not isinstance(n_steps, numbers.Integral):
        raise DDMError(f"n_steps must be an integer >= 1 (RK4 steps per pair); got {n_steps!r}")
    if n_steps < 1:
        raise DDMError(f"n_steps must be an integer >= 1 (RK4 steps per pair); got {n_steps}")
    return int(n_steps)


def _params(A, b_z, M, c, tau):
    A = _array(A, "A", (None, None), "(d, N): the decoders")
    d, N = A.shape
    if d < 1 or N < 1:
        raise DDMError(f"A must be (d, N) with d >= 1 and N >= 1; got shape {A.shape}")
    b_z = _array(b_z, "b_z", (d,), f"(d,) with d = {d} from A")
    M = _array(M, "M", (N, d), f"(N, d) = ({N}, {d}) from A")
    c = _array(c, "c", (N,), f"(N,) with N = {N} from A")
    tau = _scalar(tau, "tau", positive=True)
    return A, b_z, M, c, tau, d


def _pairs(z0, d, name="z0"):
    z0 = _array(z0, name, (None, d), f"(B, d) with d = {d}: one latent state per row")
    if z0.shape[0] < 1:
        raise DDMError(f"{name} is empty: pass at least one pair")
    return z0


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------

def integrate(A, b_z, M, c, tau, z0, h, n_steps):
    """The forward map z0 ↦ z⁽ⁿ⁾: n_steps classical RK4 steps of size h of the latent drift
    f(z) = (1/τ)[−z + A φ(M z + c) + b_z], for every row of z0 (B, d). Returns (B, d).

    RK4 is stable for the linear part −z/τ only while h/τ ≲ 2.78; keep h well below τ.
    """
    A, b_z, M, c, tau, d = _params(A, b_z, M, c, tau)
    z0 = _pairs(z0, d)
    h = _scalar(h, "h", positive=True)
    n = _steps(n_steps)
    out = np.empty_like(z0)
    _integrate_kernel(z0, A, b_z, np.ascontiguousarray(M.T), c, 1.0 / tau, h, n, out)
    if not np.all(np.isfinite(out)):
        raise DDMError("the RK4 integration diverged (non-finite states): reduce the step h "
                       f"(h/tau = {h / tau:g}) or the scale of A and M")
    return out


def multistep_loss_grad(A, b_z, M, c, tau, z0, z_obs, h, n_steps, lam, reg=0.0):
    """Multi-step (shooting) loss and its exact gradient by the discrete adjoint of RK4.

        L = (1/B) Σ_b Σ_a Λ_a (z⁽ⁿ⁾_ba − z_obs,ba)² / Δ²  +  reg ‖A‖²_F,     Δ = n_steps · h,

    where z⁽ⁿ⁾_b is z0_b after n_steps RK4 steps of size h of the latent drift (see the module
    docstring for the derivation of the gradient).

    Arguments: A (d, N), b_z (d,), M (N, d), c (N,), tau > 0; z0, z_obs (B, d); h > 0;
    n_steps >= 1; lam (d,) per-coordinate weights Λ >= 0; reg >= 0.
    Returns (L, {"A": ∂L/∂A, "b_z": ∂L/∂b_z, "M": ∂L/∂M, "c": ∂L/∂c}), shapes as the parameters.
    """
    A, b_z, M, c, tau, d = _params(A, b_z, M, c, tau)
    z0 = _pairs(z0, d, "z0")
    z_obs = _array(z_obs, "z_obs", z0.shape, f"(B, d) = {z0.shape}, the same as z0")
    h = _scalar(h, "h", positive=True)
    n = _steps(n_steps)
    lam = _array(lam, "lam", (d,), f"(d,) with d = {d}: one weight per latent coordinate")
    if np.any(lam < 0):
        raise DDMError(f"lam must be >= 0 (per-coordinate weights); got {lam}")
    reg = _scalar(reg, "reg", positive=False)

    B = z0.shape[0]
    delta = n * h
    wscale = 1.0 / (B * delta * delta)
    MT = np.ascontiguousarray(M.T)
    nb_max = (min(B, CHUNK) + BLOCK - 1) // BLOCK
    loss_b = np.empty(nb_max)
    gA_b = np.empty((nb_max, d, A.shape[1]))
    gbz_b = np.empty((nb_max, d))
    gMT_b = np.empty((nb_max, d, A.shape[1]))
    gc_b = np.empty((nb_max, A.shape[1]))
    loss = 0.0
    gA = np.zeros_like(A)
    gbz = np.zeros_like(b_z)
    gMT = np.zeros_like(MT)
    gc = np.zeros_like(c)
    # Chunks bound the per-block partial sums to O((CHUNK / BLOCK) N d) whatever B is. Partials
    # are reduced in block order by numpy (a fixed order for fixed shapes), so the result is
    # bit-identical whatever the thread count.
    for start in range(0, B, CHUNK):
        stop = min(B, start + CHUNK)
        nb = (stop - start + BLOCK - 1) // BLOCK
        parts = (loss_b[:nb], gA_b[:nb], gbz_b[:nb], gMT_b[:nb], gc_b[:nb])
        for p in parts:
            p.fill(0.0)
        _loss_grad_kernel((z0[start:stop], z_obs[start:stop], lam), (A, b_z, MT, c, 1.0 / tau),
                          (h, n, wscale), *parts)
        loss += float(loss_b[:nb].sum())
        gA += gA_b[:nb].sum(axis=0)
        gbz += gbz_b[:nb].sum(axis=0)
        gMT += gMT_b[:nb].sum(axis=0)
        gc += gc_b[:nb].sum(axis=0)
    # the common factor 1/τ of every parameter VJP, applied once
    gA /= tau
    gbz /= tau
    gMT /= tau
    gc /= tau
    loss *= wscale
    if reg > 0:
        loss += reg * float(np.sum(A * A))
        gA += 2.0 * reg * A
    if not (np.isfinite(loss) and np.all(np.isfinite(gA)) and np.all(np.isfinite(gMT))
            and np.all(np.isfinite(gc)) and np.all(np.isfinite(gbz))):
        raise DDMError("the multi-step loss is not finite: the RK4 integration diverged; reduce "
                       f"the step h (h/tau = {h / tau:g}) or the scale of A and M")
    return float(loss), {"A": gA, "b_z": gbz, "M": np.ascontiguousarray(gMT.T), "c": gc}
