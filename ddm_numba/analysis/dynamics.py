"""Deterministic latent dynamics dz/dt = f(z): fixed points, their stability, Lyapunov exponent.

The flow is given by two vectorized callables

    f(z)    z (K, d)  ->  (K, d)        the drift without noise (and without inputs)
    jac(z)  z (K, d)  ->  (K, d, d)     its analytic Jacobian, jac(z)[k, a, b] = ∂f_a/∂z_b

For a target system f is its drift; for a low-rank network in latent coordinates

    f(z) = (1/τ) [ −z + A φ(h) + b_z ],    h = M z + c,    jac(z) = (1/τ) [ −I + A diag(φ'(h)) M ],

which the caller builds. ``check_jacobian`` compares a supplied Jacobian with finite differences.

Public functions:
    find_fixed_points     multi-start damped Newton on f(z) = 0, deduplicated and classified
    pair_fixed_points     match two sets of fixed points (target vs network) and compare them
    largest_lyapunov      Benettin's method with RK4 for the flow and its tangent vector
    integrate_flow        RK4 trajectories (e.g. to put initial conditions on an attractor)
    jacobian_eigenvalues  eigenvalues of jac at given points, sorted by real part descending
    classify_eigenvalues  stable / unstable / saddle / non-hyperbolic, and node / focus
    check_jacobian        largest relative difference between jac and central differences
"""
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..errors import DDMError, positive

KINDS = ("stable", "unstable", "saddle", "non-hyperbolic")

_ARMIJO = 1e-4          # sufficient decrease: ‖f(z + α s)‖ ≤ (1 − c α) ‖f(z)‖
_MAX_HALVINGS = 30      # α down to 2^-30 ≈ 1e-9 before a start is given up
_POLISH_STEPS = 2       # extra Newton steps after convergence: quadratic convergence makes
                        # the root accurate to round-off, which eigenvalue comparisons need
_SCALE_SAMPLES = 256    # points in the box used to measure the typical size of ‖f‖


# -- results --------------------------------------------------------------------------------

@dataclass(eq=False)
class FixedPoint:
    """A fixed point f(z) = 0 and its linearization.

    z            (d,) location
    eigenvalues  (d,) complex eigenvalues of jac(z), sorted by real part descending
                 (then imaginary part descending, so a conjugate pair reads a + ib, a − ib)
    residual     ‖f(z)‖
    error        estimated distance to the exact root: the length of one more Newton step,
                 ‖jac(z)⁻¹ f(z)‖ (tiny for a simple root, larger at a degenerate one)
    kind         'stable' (all Re λ < 0), 'unstable' (all Re λ > 0), 'saddle' (mixed signs) or
                 'non-hyperbolic' (some |Re λ| within the tolerance of 0)
    label        kind refined: 'stable node', 'stable focus', 'unstable node', 'unstable focus',
                 'saddle', 'saddle-focus' or 'non-hyperbolic'
    n_unstable, n_stable, n_center   dimensions of the unstable, stable and centre subspaces
    """

    z: np.ndarray
    eigenvalues: np.ndarray
    residual: float
    error: float
    kind: str
    label: str
    n_unstable: int
    n_stable: int
    n_center: int

    @property
    def d(self):
        return int(self.z.shape[0])

    @property
    def max_real(self):
        """Largest real part of the eigenvalues (the leading growth rate)."""
        return float(self.eigenvalues.real.max())

    @property
    def leading_sign(self):
        """Sign of the largest real part with the kind's tolerance: +1, 0 (centre) or −1."""
        if self.n_unstable:
            return 1
        return 0 if self.n_center else -1

    def to_dict(self):
        """JSON-able form (complex eigenvalues as [re, im] pairs)."""
        return {"z": self.z.tolist(), "eigenvalues": _complex_list(self.eigenvalues),
                "residual": self.residual, "error": self.error, "kind": self.kind,
                "label": self.label, "n_unstable": self.n_unstable, "n_stable": self.n_stable,
                "n_center": self.n_center}


@dataclass(eq=False)
class FixedPointPair:
    """One matched pair: reference[reference_index] ↔ other[other_index].

    distance             ‖z_ref − z_other‖
    eigenvalue_pairs     (d, 2) complex: row i is (λ_i of the reference, its matched μ of the other)
    max_eigenvalue_diff  max_i |λ_i − μ_i| over the one-to-one eigenvalue matching
    kind_agrees          both have the same kind ('saddle' == 'saddle', …)
    sign_agrees          the largest real parts have the same sign (+, 0 or −, see leading_sign)
    index_agrees         same number of unstable directions
    """

    reference_index: int
    other_index: int
    reference: FixedPoint
    other: FixedPoint
    distance: float
    eigenvalue_pairs: np.ndarray
    max_eigenvalue_diff: float
    kind_agrees: bool
    sign_agrees: bool
    index_agrees: bool

    def to_dict(self):
        return {"reference_index": self.reference_index, "other_index": self.other_index,
                "reference_z": self.reference.z.tolist(), "other_z": self.other.z.tolist(),
                "distance": self.distance,
                "reference_eigenvalues": _complex_list(self.eigenvalue_pairs[:, 0]),
                "other_eigenvalues": _complex_list(self.eigenvalue_pairs[:, 1]),
                "max_eigenvalue_diff": self.max_eigenvalue_diff,
                "reference_kind": self.reference.kind, "other_kind": self.other.kind,
                "kind_agrees": self.kind_agrees, "sign_agrees": self.sign_agrees,
                "index_agrees": self.index_agrees}


@dataclass(eq=False)
class FixedPointPairing:
    """Result of :func:`pair_fixed_points`.

    pairs                list of FixedPointPair, in the order of the reference points
    unmatched_reference  indices into the reference list with no partner
    unmatched_other      indices into the other list with no partner
    """

    pairs: list
    unmatched_reference: list
    unmatched_other: list

    @property
    def all_agree(self):
        """Every point has a partner and every pair has the same kind."""
        return (not self.unmatched_reference and not self.unmatched_other
                and all(p.kind_agrees for p in self.pairs))

    @property
    def max_distance(self):
        return max((p.distance for p in self.pairs), default=0.0)

    @property
    def max_eigenvalue_diff(self):
        return max((p.max_eigenvalue_diff for p in self.pairs), default=0.0)

    def to_dict(self):
        return {"pairs": [p.to_dict() for p in self.pairs],
                "unmatched_reference": list(self.unmatched_reference),
                "unmatched_other": list(self.unmatched_other), "all_agree": self.all_agree,
                "max_distance": self.max_distance,
                "max_eigenvalue_diff": self.max_eigenvalue_diff}


@dataclass(eq=False)
class LyapunovResult:
    """Result of :func:`largest_lyapunov`.

    mean      average of the per-run exponents
    stderr    standard error of the mean. Fixed time (rtol None): std(per_run, ddof=1)/√K (nan
              when K = 1), the run-to-run scatter only. To an accuracy (rtol given): the larger
              of that and the batch-means error over blocks (see largest_lyapunov). Neither
              covers the finite-time bias.
    per_run   (K,) exponent from each initial condition
    time      time integrated after the transient (≤ the budget)
    z_end     (K, d) final states (continue from there for a longer run)
    rtol, atol     the requested accuracy, stderr ≤ max(rtol |mean|, atol) (None: fixed time)
    reached        whether it was reached within the budget (None for a fixed time)
    budget         the largest time allowed (= time for a fixed time)
    block, blocks  the block length and the number of blocks used for the batch means
    """

    mean: float
    stderr: float
    per_run: np.ndarray
    dt: float
    time: float
    transient: float
    z_end: np.ndarray = field(repr=False)
    rtol: float = None
    atol: float = None
    reached: bool = None
    budget: float = None
    block: float = None
    blocks: int = 0

    def to_dict(self):
        return {"mean": self.mean, "stderr": self.stderr, "per_run": self.per_run.tolist(),
                "dt": self.dt, "time": self.time, "transient": self.transient,
                "rtol": self.rtol, "atol": self.atol, "reached": self.reached,
                "budget": self.budget, "block": self.block, "blocks": self.blocks,
                "rel_stderr": (self.stderr / abs(self.mean) if self.mean != 0 else None)}


# -- validated evaluation ---------------------------------------------------------------------

class _Flow:
    """f and jac with their output shapes checked on every call (cheap; bad shapes are bugs)."""

    def __init__(self, f, jac, d):
        if not callable(f) or (jac is not None and not callable(jac)):
            raise DDMError("f and jac must be callables: f(z) -> (K, d) and jac(z) -> (K, d, d) "
                           "for z of shape (K, d)")
        self._f, self._jac, self.d = f, jac, d

    def f(self, z):
        out = np.asarray(self._f(z), dtype=float)
        if out.shape != z.shape:
            raise DDMError(f"f must return an array of shape (K, d) = {z.shape} for z of shape "
                           f"{z.shape}; it returned shape {out.shape}. Vectorize f over the "
                           "rows of z")
        return out

    def jac(self, z):
        out = np.asarray(self._jac(z), dtype=float)
        want = z.shape + (self.d,)
        if out.shape != want:
            raise DDMError(f"jac must return an array of shape (K, d, d) = {want} for z of shape "
                           f"{z.shape} (jac[k, a, b] = ∂f_a/∂z_b); it returned shape {out.shape}")
        return out


def _as_box(box):
    try:
        box = np.asarray(box, dtype=float)
    except (TypeError, ValueError):
        raise DDMError("box must be a (d, 2) array of numbers: one [low, high] row per "
                       "coordinate") from None
    if box.ndim != 2 or box.shape[1] != 2 or box.shape[0] < 1:
        raise DDMError(f"box must have shape (d, 2), one [low, high] row per coordinate; got "
                       f"shape {box.shape} (for d = 1 write [[low, high]])")
    if not np.all(np.isfinite(box)):
        raise DDMError("box contains non-finite values; give finite [low, high] bounds")
    if np.any(box[:, 1] <= box[:, 0]):
        bad = int(np.nonzero(box[:, 1] <= box[:, 0])[0][0])
        raise DDMError(f"box row {bad} is {box[bad].tolist()}: each row must be [low, high] "
                       "with low < high")
    return box


def _as_points(z, d, what):
    try:
        z = np.asarray(z, dtype=float)
    except (TypeError, ValueError):
        raise DDMError(f"{what} must be an array of numbers of shape (K, d)") from None
    if z.ndim == 1 and d is not None and z.shape[0] == d:
        z = z[None]
    if z.ndim != 2 or z.shape[0] < 1 or (d is not None and z.shape[1] != d):
        want = "(K, d)" if d is None else f"(K, {d})"
        raise DDMError(f"{what} must have shape {want}; got shape {z.shape}")
    if not np.all(np.isfinite(z)):
        raise DDMError(f"{what} contains non-finite values (nan or inf); pass finite points")
    return np.ascontiguousarray(z)


def _complex_list(values):
    return [[float(v.real), float(v.imag)] for v in np.asarray(values, dtype=complex)]


# -- eigenvalues and classification -----------------------------------------------------------

def _sorted_eigenvalues(J):
    """Eigenvalues of a stack (K, d, d), each row sorted by (Re, Im) descending."""
    lam = np.linalg.eigvals(J).astype(complex)
    order = np.lexsort((-lam.imag, -lam.real), axis=-1)
    return np.take_along_axis(lam, order, axis=-1)


def jacobian_eigenvalues(jac, z):
    """Eigenvalues of jac at the points z (K, d) (or one point (d,)): (K, d) complex, each row
    sorted by real part descending (ties: imaginary part descending)."""
    z = np.asarray(z, dtype=float)
    d = z.shape[-1] if z.ndim else None
    z = _as_points(z, d, "z")
    J = _Flow(lambda x: x, jac, z.shape[1]).jac(z)
    if not np.all(np.isfinite(J)):
        raise DDMError("jac returned non-finite values at the given points")
    return _sorted_eigenvalues(J)


def classify_eigenvalues(eigenvalues, tol=1e-6, rate=None):
    """Kind and label of a fixed point from its eigenvalues.

    A real part counts as zero when |Re λ| ≤ tol · max(max|λ|, rate): relative, so the answer
    does not depend on the time unit. `rate` is a typical rate of the whole system (e.g. the
    size of the Jacobian over the region of interest); without it a lone small eigenvalue,
    as at the degenerate root of f = −z³, would always look hyperbolic.
    Returns (kind, label, n_unstable, n_stable, n_center):
        kind   'non-hyperbolic' if any real part is zero, else 'stable' (all Re < 0),
               'unstable' (all Re > 0) or 'saddle' (both signs)
        label  'stable node'/'stable focus', 'unstable node'/'unstable focus',
               'saddle'/'saddle-focus' (focus: some eigenvalue is complex), or 'non-hyperbolic'
    """
    lam = np.asarray(eigenvalues, dtype=complex).ravel()
    threshold = tol * max(float(np.abs(lam).max()) if lam.size else 0.0, rate or 0.0)
    n_unstable = int(np.sum(lam.real > threshold))
    n_stable = int(np.sum(lam.real < -threshold))
    n_center = lam.size - n_unstable - n_stable
    focus = bool(np.any(np.abs(lam.imag) > threshold))
    if n_center:
        kind = label = "non-hyperbolic"
    elif n_unstable == 0:
        kind = "stable"
        label = "stable focus" if focus else "stable node"
    elif n_stable == 0:
        kind = "unstable"
        label = "unstable focus" if focus else "unstable node"
    else:
        kind = "saddle"
        label = "saddle-focus" if focus else "saddle"
    return kind, label, n_unstable, n_stable, n_center


def check_jacobian(f, jac, z, eps=1e-6):
    """Largest relative difference between jac(z) and central differences of f at z (K, d).

        error = max_k ‖J_k − J̃_k‖_max / max(‖J̃_k‖_max, 1)
        J̃_k[:, b] = (f(z + h e_b) − f(z − h e_b)) / 2h

    with h = eps · max(1, |z_b|). A correct analytic Jacobian gives ~1e-8 or less; a wrong one
    gives O(1). Use it once on a few points before trusting fixed points and exponents.
    """
    z = np.asarray(z, dtype=float)
    z = _as_points(z, z.shape[-1] if z.ndim else None, "z")
    flow = _Flow(f, jac, z.shape[1])
    J = flow.jac(z)
    h = eps * np.maximum(1.0, np.abs(z))
    numeric = np.empty_like(J)
    for b in range(z.shape[1]):
        step = np.zeros_like(z)
        step[:, b] = h[:, b]
        numeric[:, :, b] = (flow.f(z + step) - flow.f(z - step)) / (2 * h[:, b, None])
    if not (np.all(np.isfinite(J)) and np.all(np.isfinite(numeric))):
        raise DDMError("f or jac returned non-finite values at the points given to check_jacobian")
    scale = np.maximum(np.abs(numeric).max(axis=(1, 2)), 1.0)
    return float((np.abs(J - numeric).max(axis=(1, 2)) / scale).max())


# -- fixed points ----------------------------------------------------------------------------

def _newton_step(J, F):
    """s solving J s = −F for each row; rows with a singular J get the least-norm step."""
    try:
        s = np.linalg.solve(J, -F[..., None])[..., 0]
        if np.all(np.isfinite(s)):
            return s
    except np.linalg.LinAlgError:
        pass
    return -np.einsum("kab,kb->ka", np.linalg.pinv(J), F)


def _norm(F):
    return np.sqrt(np.sum(F * F, axis=-1))


def _damped_newton(flow, z, tol_abs, max_iter, max_step):
    """Damped Newton on all rows of z at once; returns (z, ‖f(z)‖).

    Each iteration takes the Newton step s = −J⁻¹f (its length capped at max_step) and halves
    α until ‖f(z + α s)‖ ≤ (1 − 1e-4 α)‖f(z)‖ (non-finite trial values count as failures).
    A row stops when its residual is ≤ tol_abs or when no α is accepted.
    """
    z = z.copy()
    F = flow.f(z)
    r = _norm(F)
    active = np.isfinite(r) & (r > tol_abs)
    for _ in range(max_iter):
        idx = np.nonzero(active)[0]
        if idx.size == 0:
            break
        J = flow.jac(z[idx])
        finite = np.all(np.isfinite(J), axis=(1, 2))
        active[idx[~finite]] = False
        idx, J = idx[finite], J[finite]
        if idx.size == 0:
            break
        s = _newton_step(J, F[idx])
        length = _norm(s)
        s *= np.minimum(1.0, max_step / np.maximum(length, 1e-300))[:, None]
        accepted = _backtrack(flow, z, F, r, idx, s)
        active[idx[~accepted]] = False
        active &= r > tol_abs
    return z, r


def _backtrack(flow, z, F, r, idx, s):
    """Halve α per row until sufficient decrease; updates z, F, r in place for accepted rows."""
    accepted = np.zeros(idx.size, dtype=bool)
    alpha = 1.0
    for _ in range(_MAX_HALVINGS + 1):
        todo = np.nonzero(~accepted)[0]
        if todo.size == 0:
            break
        rows = idx[todo]
        trial = z[rows] + alpha * s[todo]
        with np.errstate(all="ignore"):
            Ft = flow.f(trial)
            rt = _norm(Ft)
        ok = np.isfinite(rt) & (rt <= (1.0 - _ARMIJO * alpha) * r[rows])
        good, good_rows = todo[ok], rows[ok]
        z[good_rows], F[good_rows], r[good_rows] = trial[ok], Ft[ok], rt[ok]
        accepted[good] = True
        alpha *= 0.5
    return accepted


def _merge(z, residual, error, radius):
    """Keep one point per cluster: best residual first; points closer than
    radius + 10·(error_i + error_j) are the same fixed point (the error term merges the slowly
    converging copies of a degenerate root, which approach it from different sides)."""
    order = np.argsort(residual, kind="stable")
    kept = []
    for i in order:
        if all(np.linalg.norm(z[i] - z[j]) > radius + 10.0 * (error[i] + error[j])
               for j in kept):
            kept.append(i)
    return np.asarray(kept, dtype=int)


def _box_scales(flow, box, rng):
    """Units measured on uniform points of the box: S = RMS ‖f‖ (for residuals) and
    R = RMS ‖jac‖₂ (a typical rate, for telling a zero real part from a small one)."""
    pts = box[:, 0] + (box[:, 1] - box[:, 0]) * rng.random((_SCALE_SAMPLES, box.shape[0]))
    F, J = flow.f(pts), flow.jac(pts)
    for name, value in (("f", F), ("jac", J)):
        if not np.all(np.isfinite(value)):
            raise DDMError(f"{name} returned non-finite values (nan or inf) inside the box; "
                           f"check {name} or shrink the box to where f is defined")
    scale = float(np.sqrt(np.mean(np.sum(F * F, axis=1))))
    if scale == 0.0:
        raise DDMError("f is zero everywhere the box was sampled: every point is a fixed point, "
                       "there is nothing to find; check f")
    rate = float(np.sqrt(np.mean(np.linalg.norm(J, 2, axis=(1, 2)) ** 2)))
    return scale, rate


def find_fixed_points(f, jac, box, starts=256, seed=0, tol=1e-10, max_iter=100, merge_tol=1e-6,
                      margin=0.25, hyperbolic_tol=1e-6):
    """Fixed points f(z) = 0 inside (or near) a box, by multi-start damped Newton.

    box            (d, 2) array of [low, high] per coordinate
    starts         number of starts drawn uniformly in the box, or explicit start points (K, d)
    seed           seed of the uniform draws (starts and the points that measure the f scale)
    tol            a start has converged when ‖f(z)‖ ≤ tol · S, with S the RMS of ‖f‖ over 256
                   uniform points of the box; converged points get two more Newton steps
    max_iter       Newton iterations per start
    merge_tol      converged points closer than merge_tol · (box diagonal) are one point
    margin         points beyond the box widened by margin · (high − low) on each side are
                   dropped (0.25: the box enlarged by 50% about its centre)
    hyperbolic_tol a real part counts as zero when |Re λ| ≤ hyperbolic_tol · max(max|λ|, R),
                   R = RMS of ‖jac‖₂ over the same 256 points (see classify_eigenvalues)

    Returns a list of FixedPoint sorted by coordinates (first coordinate first). An empty list
    means no start converged: enlarge the box, add starts or check f.
    """
    box = _as_box(box)
    d = box.shape[0]
    flow = _Flow(f, jac, d)
    rng = np.random.default_rng(seed)
    scale, rate = _box_scales(flow, box, rng)
    z0 = _starts(starts, box, rng)
    max_iter = int(positive(max_iter, "max_iter", allow_zero=True))
    width = box[:, 1] - box[:, 0]
    diagonal = float(np.linalg.norm(width))

    tol_abs = positive(tol, "tol") * scale
    z, r = _damped_newton(flow, z0, tol_abs, max_iter, max_step=diagonal)
    converged = np.isfinite(r) & (r <= tol_abs)
    inside = np.all((z >= box[:, 0] - margin * width) & (z <= box[:, 1] + margin * width), axis=1)
    z = z[converged & inside]
    if z.shape[0] == 0:
        return []
    z, r = _damped_newton(flow, z, 0.0, _POLISH_STEPS, max_step=diagonal)

    J = flow.jac(z)
    if not np.all(np.isfinite(J)):
        raise DDMError("jac returned non-finite values at a fixed point; check jac")
    error = _norm(_newton_step(J, flow.f(z)))
    keep = _merge(z, r, error, merge_tol * diagonal)
    z, r, error, J = z[keep], r[keep], error[keep], J[keep]
    order = np.lexsort(z.T[::-1])
    lam = _sorted_eigenvalues(J[order])
    points = []
    for k, i in enumerate(order):
        kind, label, nu, ns, nc = classify_eigenvalues(lam[k], hyperbolic_tol, rate)
        points.append(FixedPoint(z=z[i].copy(), eigenvalues=lam[k], residual=float(r[i]),
                                 error=float(error[i]), kind=kind, label=label, n_unstable=nu,
                                 n_stable=ns, n_center=nc))
    return points


def _starts(starts, box, rng):
    d = box.shape[0]
    if np.isscalar(starts) and not isinstance(starts, (str, bytes)):
        if int(starts) != starts or starts < 1:
            raise DDMError(f"starts must be a positive integer or a (K, {d}) array of start "
                           f"points, got {starts!r}")
        return box[:, 0] + (box[:, 1] - box[:, 0]) * rng.random((int(starts), d))
    return _as_points(starts, d, "starts")


# -- comparing two sets of fixed points -------------------------------------------------------

def _pair_eigenvalues(lam, mu):
    """One-to-one matching of two spectra minimizing Σ|λ − μ| (scipy linear_sum_assignment).
    The cost is unchanged by conjugating both sides, so a conjugate pair is matched to a
    conjugate pair (a + ib with c + id, a − ib with c − id)."""
    cost = np.abs(lam[:, None] - mu[None, :])
    rows, cols = linear_sum_assignment(cost)
    return np.stack([lam[rows], mu[cols]], axis=1), float(cost[rows, cols].max())


def pair_fixed_points(reference, other, max_distance=None):
    """Match fixed points of a reference (target) and another system (network).

    The matching minimizes the total distance Σ‖z_ref − z_other‖ over one-to-one pairs
    (linear_sum_assignment; with unequal counts the surplus stays unmatched). Pairs farther
    apart than max_distance (if given) are dissolved into unmatched points. For each pair the
    eigenvalues are matched one to one the same way on |λ − μ|.

    Returns a FixedPointPairing (pairs in reference order, unmatched indices on both sides).
    """
    reference, other = list(reference), list(other)
    for name, points in (("reference", reference), ("other", other)):
        if not all(isinstance(p, FixedPoint) for p in points):
            raise DDMError(f"{name} must be a list of FixedPoint (from find_fixed_points)")
    dims = {p.d for p in reference + other}
    if len(dims) > 1:
        raise DDMError(f"cannot pair fixed points of different dimensions {sorted(dims)}; "
                       "compare the target and network in the same latent coordinates")
    if max_distance is not None:
        max_distance = positive(max_distance, "max_distance", allow_zero=True)
    pairs, used_ref, used_other = [], set(), set()
    if reference and other:
        zr = np.array([p.z for p in reference])
        zo = np.array([p.z for p in other])
        dist = np.linalg.norm(zr[:, None] - zo[None], axis=-1)
        for i, j in zip(*linear_sum_assignment(dist)):
            if max_distance is not None and dist[i, j] > max_distance:
                continue
            pairs.append(_make_pair(int(i), int(j), reference[i], other[j], float(dist[i, j])))
            used_ref.add(int(i))
            used_other.add(int(j))
    return FixedPointPairing(
        pairs=pairs,
        unmatched_reference=[i for i in range(len(reference)) if i not in used_ref],
        unmatched_other=[j for j in range(len(other)) if j not in used_other])


def _make_pair(i, j, a, b, distance):
    eig_pairs, max_diff = _pair_eigenvalues(a.eigenvalues, b.eigenvalues)
    return FixedPointPair(reference_index=i, other_index=j, reference=a, other=b,
                          distance=distance, eigenvalue_pairs=eig_pairs,
                          max_eigenvalue_diff=max_diff, kind_agrees=a.kind == b.kind,
                          sign_agrees=a.leading_sign == b.leading_sign,
                          index_agrees=a.n_unstable == b.n_unstable)


# -- largest Lyapunov exponent ----------------------------------------------------------------

def _rk4(flow, z, dt):
    k1 = flow.f(z)
    k2 = flow.f(z + 0.5 * dt * k1)
    k3 = flow.f(z + 0.5 * dt * k2)
    k4 = flow.f(z + dt * k3)
    return z + (dt / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)


def integrate_flow(f, z0, dt, n_steps, every=1):
    """RK4 trajectories of dz/dt = f(z) from the rows of z0 (K, d).

    Returns (n_steps // every + 1, K, d): the states at t = 0, every·dt, 2·every·dt, …
    Useful to put initial conditions on an attractor before largest_lyapunov.
    """
    z = np.asarray(z0, dtype=float)
    z = _as_points(z, z.shape[-1] if z.ndim else None, "z0")
    dt = positive(dt, "dt")
    n_steps = int(positive(n_steps, "n_steps", allow_zero=True))
    every = int(positive(every, "every"))
    flow = _Flow(f, None, z.shape[1])
    out = [z]
    for step in range(1, n_steps + 1):
        z = _rk4(flow, z, dt)
        if step % every == 0:
            _check_finite(z, step * dt, "trajectory")
            out.append(z)
    return np.stack(out)


def _rk4_tangent(flow, z, v, dt):
    """One RK4 step of the joint system dz/dt = f(z), dv/dt = J(z) v: the tangent uses the
    same stage points as the flow, so v is the exact derivative of the discrete RK4 map."""
    def jv(x, w):
        return np.einsum("kab,kb->ka", flow.jac(x), w)
    k1, l1 = flow.f(z), jv(z, v)
    z2, v2 = z + 0.5 * dt * k1, v + 0.5 * dt * l1
    k2, l2 = flow.f(z2), jv(z2, v2)
    z3, v3 = z + 0.5 * dt * k2, v + 0.5 * dt * l2
    k3, l3 = flow.f(z3), jv(z3, v3)
    z4, v4 = z + dt * k3, v + dt * l3
    k4, l4 = flow.f(z4), jv(z4, v4)
    return (z + (dt / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4),
            v + (dt / 6.0) * (l1 + 2 * l2 + 2 * l3 + l4))


def _tangent_run(flow, z, v, dt, n_steps, renorm_every, t0):
    """n_steps RK4 steps of (z, v), renormalizing v every renorm_every steps and at the end;
    returns (z, v, Σ log growth) per run."""
    log_growth = np.zeros(z.shape[0])
    for step in range(1, n_steps + 1):
        z, v = _rk4_tangent(flow, z, v, dt)
        if step % renorm_every == 0 or step == n_steps:
            _check_finite(np.hstack([z, v]), t0 + step * dt, "trajectory or tangent vector")
            growth = _norm(v)
            if np.any(growth == 0):
                raise DDMError("the tangent vector collapsed to zero; check jac (is it the "
                               "Jacobian of f?)")
            log_growth += np.log(growth)
            v = v / growth[:, None]
    return z, v, log_growth


def _check_finite(z, t, what):
    bad = ~np.all(np.isfinite(z), axis=1)
    if np.any(bad):
        raise DDMError(f"the {what} from initial condition {int(np.nonzero(bad)[0][0])} became "
                       f"non-finite by t = {t:.4g}: reduce dt, or start on the attractor (the "
                       "flow may diverge from there)")


def largest_lyapunov(f, jac, z0, dt, time, transient, seed=0, renorm_every=10, rtol=None,
                     atol=1e-3, block=None, min_blocks=10):
    """Largest Lyapunov exponent by Benettin's method, vectorized over initial conditions.

        λ₁ = lim (1/T) log ‖v(T)‖ / ‖v(0)‖,    dz/dt = f(z),   dv/dt = J(z) v

    Each of the K rows of z0 (K, d) is integrated with RK4 together with a tangent vector v,
    first for `transient` (growth discarded: z lands on the attractor and v turns into the
    most unstable direction), then for `time`; v starts as a random unit vector (from `seed`)
    and is renormalized every `renorm_every` steps, the logs of the growth factors summed.
    Per run λ = Σ log growth / time; the result holds the mean over runs and its standard
    error std/√K.

    Choosing dt and time: dt must resolve the fastest rate (|λ|max · dt ≲ 0.3 keeps RK4's
    discretization error below the statistical one). The finite-time exponent of a chaotic
    flow scatters like 1/√time, and has a bias O(1/time) from the random initial tangent
    direction (plus a transient that the `transient` argument absorbs for z, not for v). For a
    limit cycle the exponent is 0 and the estimate decays like 1/time.

    Measured on Lorenz (σ=10, ρ=28, β=8/3; literature λ₁ = 0.9056), independent initial
    conditions uniform in [−15, 15]×[−20, 20]×[5, 40], transient 10, dt = 0.01:
        K = 256, time = 400: 0.9055 ± 0.0005 (7 s): the dt = 0.01 bias is below 0.1%;
        K = 64,  time = 100: 0.904 ± 0.003 (1.5 s), per-run scatter 0.02 (∝ 1/√time);
        dt = 0.005 agrees within the stderr.
    Runs started from points of one trajectory are NOT independent (RK4 retraces the same
    orbit bit for bit), so their stderr is far too small: spread z0 randomly. The cost is
    dominated by Python overhead per step, so K = 256 costs little more than K = 16.
    Stuart–Landau (μ = ω = 1), dt = 0.01, time = 20, transient 5: |λ₁| < 2e-6 (the tangent
    lies along the cycle, where |f| is constant).

    To a stated accuracy (rtol given; `time` is then the budget, the most time it may
    integrate). The runs advance together in blocks of `block` time units (default: time/100,
    at least 20 renormalizations and 10 steps); the growth of block b, averaged over the runs,
    gives m_b = (1/K) Σ_k (log growth of run k in block b) / block. Their mean is the estimate
    (the same number as mean(per_run)) and the batch-means standard error

        SE_batch = std(m_1 … m_B, ddof=1) / √B

    is valid whether or not the runs are independent (blocks much longer than the correlation
    time of the local expansion rate are nearly independent; runs that retrace one orbit only
    add nothing). With K ≥ 2 independent runs std(per_run)/√K is a second estimate; the larger
    of the two is reported. The first blocks, while the tangent vector still turns into the
    leading direction (≈ 5/λ₁ time units, see _lyapunov_estimate), are left out of both; the
    result's `transient` includes them. After at least `min_blocks` blocks, integration stops as
    soon as stderr ≤ max(rtol |λ|, atol) (reached = True), or when the budget is spent
    (reached = False). atol (default 1e-3 per time unit) ends the run for exponents near 0
    (limit cycles, fixed points), where a relative target cannot be met.
    Measured (RK4, dt = 0.01, 16 starts uniform on a box around the attractor, transient 10,
    rtol = 0.02): see tests/test_dynamics.py (Rössler a = b = 0.2, c = 5.7, literature 0.0714;
    Lorenz, 0.9056).
    """
    z = np.asarray(z0, dtype=float)
    z = _as_points(z, z.shape[-1] if z.ndim else None, "z0")
    dt = positive(dt, "dt")
    time = positive(time, "time")
    transient = positive(transient, "transient", allow_zero=True)
    renorm_every = int(positive(renorm_every, "renorm_every"))
    if dt > time:
        raise DDMError(f"dt = {dt} is longer than time = {time}; use dt ≪ time")
    if rtol is not None:
        rtol = positive(rtol, "rtol")
        atol = positive(atol, "atol", allow_zero=True)
        min_blocks = int(positive(min_blocks, "min_blocks"))
        if min_blocks < 2:
            raise DDMError(f"min_blocks must be at least 2 for a standard error, got {min_blocks}")
        block = (max(time / 100.0, 20 * renorm_every * dt, 10 * dt) if block is None
                 else positive(block, "block"))
        if block < dt:
            raise DDMError(f"block = {block} is shorter than dt = {dt}")
        if min_blocks * block > time:
            raise DDMError(f"the budget time = {time} is shorter than min_blocks × block = "
                           f"{min_blocks} × {block:g}: give a longer budget or shorter blocks")
    flow = _Flow(f, jac, z.shape[1])
    K = z.shape[0]

    rng = np.random.default_rng(seed)
    v = rng.standard_normal(z.shape)
    v /= _norm(v)[:, None]
    # The tangent vector runs through the transient too (its growth discarded): a random v
    # needs time to turn into the most unstable direction, and counting that time would bias
    # the estimate by O(log|initial projection| / time), about −1% for Lorenz at time 100.
    z, v, _ = _tangent_run(flow, z, v, dt, int(round(transient / dt)), renorm_every, 0.0)
    if rtol is not None:
        return _lyapunov_to_accuracy(flow, z, v, dt, time, transient, renorm_every, rtol, atol,
                                     block, min_blocks)
    n_steps = max(1, int(round(time / dt)))
    z, v, log_growth = _tangent_run(flow, z, v, dt, n_steps, renorm_every, transient)
    per_run = log_growth / (n_steps * dt)
    stderr = float(per_run.std(ddof=1) / np.sqrt(K)) if K > 1 else float("nan")
    return LyapunovResult(mean=float(per_run.mean()), stderr=stderr, per_run=per_run, dt=dt,
                          time=n_steps * dt, transient=transient, z_end=z, budget=n_steps * dt)


def _lyapunov_to_accuracy(flow, z, v, dt, budget, transient, renorm_every, rtol, atol, block,
                          min_blocks):
    """Blocks of `block` time until stderr ≤ max(rtol |λ|, atol) or the budget is spent
    (largest_lyapunov, "To a stated accuracy"), the alignment blocks left out."""
    steps = max(1, int(round(block / dt)))
    block = steps * dt
    max_blocks = max(min_blocks, int(np.floor(budget / block + 1e-9)))
    growth = []                              # (blocks, K): log growth of each run in each block
    reached = False
    for b in range(max_blocks):
        z, v, g = _tangent_run(flow, z, v, dt, steps, renorm_every, transient + b * block)
        growth.append(g)
        mean, stderr, skip = _lyapunov_estimate(np.array(growth), block, transient, min_blocks)
        if len(growth) - skip >= min_blocks and stderr <= max(rtol * abs(mean), atol):
            reached = True
            break
    G = np.array(growth)
    mean, stderr, skip = _lyapunov_estimate(G, block, transient, min_blocks)
    used = G[skip:]
    T = used.shape[0] * block
    return LyapunovResult(mean=mean, stderr=stderr, per_run=used.sum(axis=0) / T, dt=dt, time=T,
                          transient=transient + skip * block, z_end=z, rtol=rtol, atol=atol,
                          reached=reached, budget=budget, block=block, blocks=used.shape[0])


def _lyapunov_estimate(G, block, transient, min_blocks):
    """(λ, SE, skipped blocks) from the block growths G (B, K).

    Alignment: a random tangent vector turns into the leading direction like e^{−(λ₁ − λ₂)t};
    for a flow λ₂ ≥ 0 (the direction along f has exponent 0 on a chaotic attractor), so the gap
    is at most λ₁ and alignment takes ≈ 5/λ₁ (Lorenz: 5.5; Rössler: 70, which a transient of 10
    does not cover: its first 100 time units read ≈ 0.060 against 0.071). Blocks before
    transient + skip·block ≥ 5/|λ̂| are therefore left out (at most half of them, and never so
    many that fewer than min_blocks remain when there are more).
    SE = max(batch means over the run-averaged blocks, std(per_run)/√K for K ≥ 2).
    """
    B, K = G.shape
    lam = G.sum() / (B * K * block)
    skip = 0
    if lam != 0 and np.isfinite(lam):
        skip = int(np.ceil(max(0.0, 5.0 / abs(lam) - transient) / block))
    skip = min(skip, B // 2, max(0, B - min_blocks))
    used = G[skip:]
    m = used.mean(axis=1) / block                        # m_b, run-averaged block exponents
    lam = float(m.mean())
    se = float(m.std(ddof=1) / np.sqrt(m.size)) if m.size > 1 else float("nan")
    if K > 1:
        per_run = used.sum(axis=0) / (used.shape[0] * block)
        se = max(se, float(per_run.std(ddof=1) / np.sqrt(K)))
    return lam, se, skip
