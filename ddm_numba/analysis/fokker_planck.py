"""Stationary Fokker–Planck equation on a grid (d = 1 or 2): docs/irreversibility.md §3.2–3.3.

The SDE dz = f(z) dt + g dB has diffusion D = g gᵀ (project convention, no ½; physics D_p = D/2),
probability current J = f p − ½ ∇·(D p) and entropy production rate (EPR)

    Φ = ∫ Jᵀ (D/2)⁻¹ J / p dz          (the same number as the physics Φ = ∫ Jᵀ D_p⁻¹ J / p).

The box is cut into cells; the Scharfetter–Gummel (SG) finite-volume scheme turns the equation
into a Markov jump process between neighbouring cells (§3.2, "Grid and rates"). Its stationary law
P (mass per cell) solves G P = 0, Σ P = 1, and its Schnakenberg EPR Φ_h converges to Φ at O(h²).

    solve_stationary(drift, D, box, n, periodic=False) -> StationaryFP
    refine(drift, D, box, ns, periodic=False)           -> Refinement

Coordinates. A constant diagonal D is used as it is. A constant non-diagonal D is handled by the
Cholesky map of §3.3: with D = L Lᵀ, y = L⁻¹ z has drift f_y(y) = L⁻¹ f(L y) and D_y = I, and Φ
is invariant under the map. The grid is then rectangular in y over the bounding box of the image of
the z-box; every field in the result is given back in z coordinates. In both cases z = T y with
T = I or T = L ("transform").

State-dependent D in 1-D (D a callable). Write q = D p. The Itô current is

    J = f p − ½ (D p)' = (f/D) q − ½ q' = a q − ½ q',     a = f/D,

which has the form of a constant-diffusion current for q with drift a and diffusion ½. Between
the centres z_i < z_j = z_i + h, freeze J and a (a at the face midpoint). Then q' = 2 a q − 2 J is
linear with constant coefficients; integrating it from z_i to z_j and solving for J gives the SG
flux

    J = (1/(2h)) [ B(−Pe) q_i − B(Pe) q_j ],   Pe = 2 a h = 2 f h / D   (f, D at the face),

with B(x) = x/(eˣ − 1). With q_i = D_i P_i / h (P the cell mass) this is a jump process with rates

    k_{i→j} = D_i B(−Pe) / (2h²),     k_{j→i} = D_j B(Pe) / (2h²).

Zero flux gives q_j/q_i = e^{Pe} = exp(2 ∫ a dz), exactly whenever a is constant between the two
centres: the zero-flux law q ∝ exp(2 ∫ f/D), i.e. p ∝ exp(2 ∫ f/D) / D, is reproduced face by face
(midpoint rule for ∫ a: O(h³) per face, O(h²) overall), and the Itô term ½ D' p needs no separate
treatment. For constant D the rates reduce to those of §3.2 (D_k = (D_p)_kk = D_kk/2:
k₊ = (D_k/h²) B(−Pe), Pe = f h / D_k); the same formula is used along each axis of a 2-D grid with
the constant diagonal entry D_kk.

State-dependent, anisotropic D in 2-D (D a callable z (K, 2) -> (K, 2, 2), any SPD D(z) whose
off-diagonal part the lattice can carry, see below). The Itô current, with D's divergence written
out, (∇·D)_i = Σ_j ∂_j D_ij:

    J = f p − ½ ∇·(D p) = f p − ½ (∇·D) p − ½ D ∇p = ½ D p (F − ∇log p),
    F = D⁻¹ (2 f − ∇·D)          (the "thermodynamic force"; F = ∇log p_s iff J_s = 0).

Lattice directions. With cell widths h1, h2 take the lattice vectors v₁ = (h1, 0), v₂ = (0, h2),
v₊ = (h1, h2), v₋ = (h1, −h2) and split D(z) = Σ_e a_e(z) v_e v_eᵀ with a_e ≥ 0:

    a₊ = max(D12, 0)/(h1 h2),  a₋ = max(−D12, 0)/(h1 h2),
    a₁ = D11/h1² − |D12|/(h1 h2),  a₂ = D22/h2² − |D12|/(h1 h2)

(check: Σ a_e v_e v_eᵀ has entries h1²(a₁ + a₊ + a₋) = D11, h1h2(a₊ − a₋) = D12, h2²(a₂ + a₊ + a₋)
= D22). a₁, a₂ ≥ 0 is the lattice's diagonal dominance |D12| ≤ min(D11 h2/h1, D22 h1/h2)
(Kushner's condition for a monotone 9-point scheme); where it fails a DDMError says which cell
shape (h2/h1) would work. Since ∇·(a v vᵀ) = v ∂_v a and D F = Σ_e a_e v_e (v_eᵀF),

    J = Σ_e v_e j_e,    j_e = ½ a_e p (v_eᵀF − ∂_v log p),    ∂_v = v·∇,

and ∂p/∂t = −∇·J = −Σ_e ∂_v j_e: a sum of 1-D problems along the lines z + s v_e (s in units of
one lattice step). Freeze a_e and the force per step x_e = v_eᵀF at the midpoint of the edge
i → j = i + v_e; then j = ½ a (x p − ∂_s p) has constant coefficients (diffusion ½a, drift ½a x,
step 1), and its SG flux is j = ½ a [B(−x) p_i − B(x) p_j]. In cell masses this is a jump process
on the 8-neighbour lattice with rates

    k_{i→j} = ½ a_e B(−x_e),   k_{j→i} = ½ a_e B(x_e),   log(k_{i→j}/k_{j→i}) = x_e exactly,

≥ 0 for any a_e ≥ 0 and any x_e, so the generator stays a valid one (edges with a_e = 0 drop
out). Each edge's flux is j_e = a_e v_eᵀ D⁻¹ J (the force projected on the edge), the split of J
that makes Σ_e j_e²/(½ a_e p) = Jᵀ(D/2)⁻¹J/p: the chain's Schnakenberg EPR is consistent with
the continuum Φ, and a gradient F (detailed balance) gives zero-flux edges up to the midpoint
rule's O(h³) per edge. For constant diagonal D it is the axis scheme of §3.2 (x = Pe = 2 f h/D,
k = (D/(2h²)) B(∓Pe)). ∇·D comes from central differences of D with a step of 1e-4 of the box
per axis (error ~1e-8 relative, far below the grid's O(h²)). The diagonal edges are used only
where D12 ≠ 0.

Limits. Cells whose mass underflows (P < 1e-308 max P) are empty, which is harmless in tails. Two
metastable states separated by a barrier of more than ~700 in log p cannot be balanced in double
precision: their relative mass is then arbitrary. Use a larger D or a smaller box.
"""
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ..errors import DDMError

MIN_CELLS_PER_AXIS = 8          # below this the central differences and the EPR are meaningless
MAX_CELLS = 1_000_000           # LU fill grows like N log N: 160 000 cells take ~10⁷ factor entries
BOUNDARY_MASS_WARN = 1e-8       # §3.2 check 2 asks for < 1e-12; above 1e-8 the walls shape the law
RESIDUAL_WARN = 1e-8            # §3.2 check 1: ≈ 1e-10 or less is normal
NEGATIVE_MASS_WARN = 1e-12      # relative to max P; smaller negatives are round-off and are clipped
FACE_MASS_FLOOR = 1e-12         # Φ_h' uses only faces whose cells have P > this × max P (§3.2)
LOG_FLOOR = 1e-300              # log p of empty cells: finite, so 0 · (garbage) stays 0


# -- results ---------------------------------------------------------------------------------------

@dataclass
class StationaryFP:
    """Stationary solution of the Fokker–Planck equation on a grid (docs/irreversibility.md §3.2).

    Arrays are indexed by cell: shape (n1,) in 1-D, (n1, n2) in 2-D, with a trailing axis of length
    d for vector fields. All positions, densities and fields are in z coordinates.

    points          cell centres, (n1[, n2], d)
    corners         2-D: (X, Y), each (n1+1, n2+1), cell corners for matplotlib's pcolormesh
                    (quadrilaterals when the Cholesky map is used); 1-D: the n1+1 cell edges
    mass            P, probability per cell (≥ 0, sums to 1)
    density         p = P / (cell volume in z)
    epr             Schnakenberg Φ_h of the jump process
    epr_face        Φ_h' = Σ_faces F² h_k² / (D_p,k P̄) (face currents, §3.2)
    epr_hhd         Σ_cells P · 2 f_irrᵀ D⁻¹ f_irr (the HHD split on the grid, §3.2 check 5)
    f               drift at the centres
    f_rev           ½ D ∇log p (+ ½ ∇·D in 1-D with state-dependent D), central differences
    f_irr           f − f_rev
    J               stationary current at the centres from the SG face fluxes: the mean of the
                    two face flux densities along each axis (walls carry 0). These face fluxes are
                    the scheme's own, exactly conserved current; J equals p·f_irr up to O(h²).
    residual        max |G P| / max P of the raw solve
    mass_min        the most negative raw P before clipping (round-off level is normal)
    boundary_mass   mass in the outermost cells of the non-periodic axes
    h               cell widths per axis in grid coordinates y (= z unless the Cholesky map is used)
    n, box, periodic, grid_box (the box in y), transform (T with z = T y)
    warnings        human-readable problems found (box too small, large residual, ...)
    """

    points: np.ndarray
    corners: object
    mass: np.ndarray
    density: np.ndarray
    epr: float
    epr_face: float
    epr_hhd: float
    f: np.ndarray
    f_rev: np.ndarray
    f_irr: np.ndarray
    J: np.ndarray
    residual: float
    mass_min: float
    boundary_mass: float
    h: tuple
    n: tuple
    box: np.ndarray
    periodic: tuple
    grid_box: np.ndarray
    transform: np.ndarray
    warnings: list = field(default_factory=list)


@dataclass
class Refinement:
    """A refinement study (§3.2 check 7): Φ_h at each n, Richardson value and observed order.

    ns          the grids, one tuple of cells per axis each
    h           cell width along the first axis for each grid
    epr         Schnakenberg Φ_h for each grid
    epr_face    Φ_h' for each grid
    richardson  Φ_{h/r} + (Φ_{h/r} − Φ_h)/(r² − 1) from the last two grids (r = 2: the /3 rule)
    order       log((Φ_h − Φ_{h/r})/(Φ_{h/r} − Φ_{h/r²})) / log r from the last three grids
                (nan with fewer than three grids, unequal ratios, or differences of mixed sign)
    results     the StationaryFP of each grid
    """

    ns: tuple
    h: np.ndarray
    epr: np.ndarray
    epr_face: np.ndarray
    richardson: float
    order: float
    results: list


# -- public API ------------------------------------------------------------------------------------

def solve_stationary(drift, D, box, n, periodic=False):
    """Stationary law, currents and EPR of dz = f dt + g dB on a grid
    (docs/irreversibility.md §3.2).

    drift     vectorised callable, z (K, d) -> f (K, d)
    D         constant (d, d) SPD diffusion g gᵀ (project convention), or a callable
              z (K, d) -> D (K, d, d) (state-dependent, Itô; e.g. D = a + b z² for g = √(a + b z²)
              in 1-D; in 2-D any SPD D(z) with |D12| ≤ min(D11 h2/h1, D22 h1/h2), module docstring)
    box       (d, 2) array of [low, high] per axis, d = 1 or 2
    n         cells per axis: int or tuple of d ints
    periodic  bool or tuple of d bools; non-periodic axes have zero-flux walls

    Returns a StationaryFP. Steps: SG rates on every face (vectorised per axis; in 2-D with a
    callable D also on the diagonals where D12 ≠ 0), sparse generator G
    with G[to, from] = rate, stationary solve, Schnakenberg Φ_h = Σ_faces (a − b) log(a/b) with
    a = k₊P_i, b = k₋P_j, then the fields and the checks of §3.2.
    """
    box, d = _check_box(box)
    n = _check_n(n, d)
    periodic = _check_periodic(periodic, d)
    diffusion = _Diffusion(D, d, periodic)
    grid = _Grid(box, n, periodic, diffusion.T)

    centres_z = grid.to_z(grid.centres)
    f_z = _call_drift(drift, centres_z, d, "the cell centres")
    if diffusion.tensor:                                           # 2-D, D(z) any SPD tensor
        faces = _lattice_edges(drift, diffusion, grid)
    else:
        D_centres = diffusion.diagonal(centres_z)                  # (N, d): D_y,kk at the centres
        faces = [_face_rates(drift, diffusion, grid, axis, D_centres) for axis in range(d)]
    G = _generator(faces, grid.N)
    P_raw, residual = _stationary(G, f_z)
    mass_min = float(P_raw.min())
    P = np.clip(P_raw, 0.0, None)
    P /= P.sum()

    epr = sum(_schnakenberg(face, P) for face in faces)
    epr_face = sum(_face_epr(face, P) for face in faces)
    if diffusion.tensor:
        f_rev, J, D_c = _tensor_fields(grid, diffusion, faces, P)
        f_irr = f_z - f_rev
        epr_hhd = float(np.sum(P * 2.0 * np.einsum("ka,kab,kb->k", f_irr, np.linalg.inv(D_c),
                                                    f_irr)))
    else:
        f_rev, J = _fields(grid, diffusion, faces, P, D_centres)
        f_irr = f_z - f_rev
        f_irr_y = grid.to_y(f_irr)
        epr_hhd = float(np.sum(P[:, None] * 2.0 * f_irr_y ** 2 / D_centres))
    boundary_mass = float(P[grid.boundary_cells()].sum())

    shape = grid.n
    return StationaryFP(
        points=centres_z.reshape(shape + (d,)),
        corners=grid.corners(),
        mass=P.reshape(shape),
        density=(P / grid.cell_volume_z).reshape(shape),
        epr=float(epr), epr_face=float(epr_face), epr_hhd=epr_hhd,
        f=f_z.reshape(shape + (d,)),
        f_rev=f_rev.reshape(shape + (d,)),
        f_irr=f_irr.reshape(shape + (d,)),
        J=J.reshape(shape + (d,)),
        residual=residual, mass_min=mass_min, boundary_mass=boundary_mass,
        h=tuple(float(x) for x in grid.h), n=grid.n, box=box, periodic=periodic,
        grid_box=grid.box, transform=grid.T.copy(),
        warnings=_diagnose(residual, mass_min, P_raw.max(), boundary_mass),
    )


def refine(drift, D, box, ns, periodic=False):
    """Refinement study (docs/irreversibility.md §3.2 "Convergence" and check 7).

    Solves at each n in ns (e.g. (50, 100, 200), increasing) and returns a Refinement with Φ_h per
    grid, the Richardson value from the last two grids,

        Φ_R = Φ_{h/r} + (Φ_{h/r} − Φ_h)/(r² − 1)     (r = 2: Φ_{h/2} + (Φ_{h/2} − Φ_h)/3),

    valid because Φ_h = Φ + C h² + O(h³), and the observed order from the last three grids,

        p = log((Φ_h − Φ_{h/r}) / (Φ_{h/r} − Φ_{h/r²})) / log r    (r = 2: log2).
    """
    ns = tuple(ns)
    if len(ns) < 2:
        raise DDMError(f"refine needs at least two grids, got ns = {ns}; "
                       "pass e.g. ns=(50, 100, 200)")
    _, d = _check_box(box)
    first_axis = [_check_n(n, d)[0] for n in ns]
    if np.any(np.diff(first_axis) <= 0):
        raise DDMError(f"refine needs grids of increasing n (decreasing h), got ns = {ns}")
    results = [solve_stationary(drift, D, box, n, periodic) for n in ns]
    h = np.array([result.h[0] for result in results])
    epr = np.array([result.epr for result in results])
    ratios = h[:-1] / h[1:]
    richardson = float(epr[-1] + (epr[-1] - epr[-2]) / (ratios[-1] ** 2 - 1.0))
    return Refinement(ns=tuple(result.n for result in results), h=h, epr=epr,
                      epr_face=np.array([result.epr_face for result in results]),
                      richardson=richardson, order=_observed_order(epr, ratios), results=results)


# -- input checks ----------------------------------------------------------------------------------

def _check_box(box):
    try:
        box = np.array(box, dtype=float)
    except (TypeError, ValueError):
        raise DDMError(f"box must be a (d, 2) array of [low, high] per axis, got {box!r}") from None
    if box.ndim == 1 and box.shape == (2,):
        box = box[None, :]
    if box.ndim != 2 or box.shape[1] != 2:
        raise DDMError(f"box must be a (d, 2) array of [low, high] per axis, got shape {box.shape}")
    d = box.shape[0]
    if d not in (1, 2):
        raise DDMError(
            f"box has {d} rows (d = {d}); the grid solver handles d = 1 or 2 only "
            "(docs/irreversibility.md §3.3). For d ≥ 3 use the ensemble estimator "
            "Φ = E[2 fᵀD⁻¹f + ∇·f] over stationary samples (§3.1 b).")
    if not np.all(np.isfinite(box)) or np.any(box[:, 1] <= box[:, 0]):
        raise DDMError(f"box must have finite low < high on every axis, got {box.tolist()}")
    return box, d


def _check_n(n, d):
    try:
        ns = (n,) * d if np.ndim(n) == 0 else tuple(n)
        whole = all(not isinstance(k, (bool, np.bool_)) and float(k).is_integer() for k in ns)
    except (TypeError, ValueError):
        ns, whole = (), False
    if not whole or len(ns) != d:
        raise DDMError(f"n must be an int or a tuple of {d} ints (cells per axis), got {n!r}")
    out = []
    for k in ns:
        if int(k) < MIN_CELLS_PER_AXIS:
            raise DDMError(f"n = {n!r} is too small: use at least {MIN_CELLS_PER_AXIS} cells per "
                           "axis (50-400 is typical; Φ_h converges at O(h²))")
        out.append(int(k))
    if int(np.prod(out)) > MAX_CELLS:
        raise DDMError(f"n = {n!r} gives {int(np.prod(out))} cells, more than {MAX_CELLS}; use "
                       "fewer cells and Richardson extrapolation (refine) instead")
    return tuple(out)


def _check_periodic(periodic, d):
    flags = (periodic,) * d if np.ndim(periodic) == 0 else tuple(periodic)
    if len(flags) != d or not all(isinstance(x, (bool, np.bool_)) for x in flags):
        raise DDMError(f"periodic must be a bool or a tuple of {d} bools, got {periodic!r}")
    return tuple(bool(x) for x in flags)


def _evaluate_user(func, z, failed, expected):
    """func(z) as a float array; an exception from the user's function becomes a DDMError that
    says what failed and what shape is expected."""
    try:
        return np.asarray(func(z.copy()), dtype=float)
    except DDMError:
        raise
    except Exception as exc:
        raise DDMError(f"{failed}: {type(exc).__name__}: {exc}. {expected}") from exc


def _call_drift(drift, z, d, where):
    """f = drift(z) checked: shape (K, d) and finite, with a message naming what is wrong."""
    if not callable(drift):
        raise DDMError(f"drift must be a callable z (K, d) -> f (K, d), got {type(drift).__name__}")
    f = _evaluate_user(drift, z, f"drift failed on an array of shape {z.shape} ({where})",
                       "It must be vectorised: z (K, d) -> f (K, d)")
    if f.shape != z.shape:
        raise DDMError(f"drift returned shape {f.shape} for z of shape {z.shape}; it must be "
                       f"vectorised and return one row of {d} components per point, "
                       f"shape {z.shape}")
    bad = ~np.all(np.isfinite(f), axis=1)
    if bad.any():
        raise DDMError(f"drift returned non-finite values at {int(bad.sum())} of {len(z)} points "
                       f"({where}), e.g. z = {z[bad][0].tolist()}; shrink the box or fix the drift")
    return f


class _Diffusion:
    """D in grid coordinates y: z = T y with T = I (diagonal D) or the Cholesky factor L (§3.3).

    diagonal(z) returns the diagonal of D_y at the points z, shape (K, d).
    """

    def __init__(self, D, d, periodic):
        self.func, self.tensor = None, False
        if callable(D):
            self.func = D
            self.T = np.eye(d)
            self.tensor = d == 2
            return
        try:
            D = np.array(D, dtype=float)
        except (TypeError, ValueError):
            raise DDMError(f"D must be a ({d}, {d}) matrix or (d = 1) a callable, "
                           f"got {D!r}") from None
        if D.ndim == 0 and d == 1:
            D = D.reshape(1, 1)
        if D.shape != (d, d):
            raise DDMError(f"D must be a ({d}, {d}) matrix for a box with {d} axes, got shape "
                           f"{D.shape}")
        if not np.all(np.isfinite(D)) or not np.allclose(D, D.T, rtol=1e-12, atol=0.0):
            raise DDMError(f"D must be finite and symmetric, got {D.tolist()}")
        try:
            L = np.linalg.cholesky(D)
        except np.linalg.LinAlgError:
            eigenvalues = np.linalg.eigvalsh(D).tolist()
            raise DDMError(f"D must be positive definite (D = g gᵀ with full-rank g), got "
                           f"{D.tolist()} with eigenvalues {eigenvalues}") from None
        if np.count_nonzero(D - np.diag(np.diag(D))) == 0:
            self.T, self.Dy = np.eye(d), np.diag(D).copy()
        else:
            if any(periodic):
                raise DDMError("periodic axes need a diagonal D: the Cholesky map of a "
                               "non-diagonal D (§3.3) does not keep the periodic lattice")
            self.T, self.Dy = L, np.ones(d)

    def diagonal(self, z):
        if self.func is None:
            return np.broadcast_to(self.Dy, z.shape).copy()
        return _call_diffusion(self.func, z)

    def matrix(self, z):
        """D(z), (K, 2, 2), checked (2-D callable D only)."""
        return _call_diffusion_2d(self.func, z)

    def divergence(self, z, step):
        """(∇·D)_i = Σ_j ∂_j D_ij at the points z (K, 2), by central differences with the step
        `step` (2,) per axis: error step²·D‴/6, round-off ε·D/step."""
        out = np.zeros(z.shape)
        for j in range(z.shape[1]):
            e = np.zeros(z.shape[1])
            e[j] = step[j]
            dD = (self.matrix(z + e) - self.matrix(z - e)) / (2.0 * step[j])
            out += dD[:, :, j]                       # ∂_j D_ij for every i
        return out


def _call_diffusion(func, z):
    """D(z) for d = 1, checked: K finite positive values, returned as shape (K, 1)."""
    D = _evaluate_user(func, z, f"D failed on an array of shape {z.shape}",
                       "A state-dependent D must be vectorised: z (K, 1) -> D (K, 1, 1)")
    if D.size != len(z) or D.shape[0] != len(z):
        raise DDMError(f"D returned shape {D.shape} for z of shape {z.shape}; it must return "
                       f"shape ({len(z)}, 1, 1)")
    D = D.reshape(len(z), 1)
    bad = ~(np.isfinite(D[:, 0]) & (D[:, 0] > 0))
    if bad.any():
        raise DDMError(f"D(z) must be finite and > 0, but it is {D[bad][0, 0]} at z = "
                       f"{z[bad][0].tolist()} ({int(bad.sum())} points); shrink the box or fix D")
    return D


def _call_diffusion_2d(func, z):
    """D(z) for d = 2, checked: finite, symmetric, positive definite, shape (K, 2, 2)."""
    D = _evaluate_user(func, z, f"D failed on an array of shape {z.shape}",
                       "A state-dependent D must be vectorised: z (K, 2) -> D (K, 2, 2)")
    if D.shape != (len(z), 2, 2):
        raise DDMError(f"D returned shape {D.shape} for z of shape {z.shape}; it must return "
                       f"shape ({len(z)}, 2, 2), D = g gᵀ at each point")
    bad = ~np.all(np.isfinite(D.reshape(len(z), 4)), axis=1)
    if bad.any():
        raise DDMError(f"D(z) is not finite at {int(bad.sum())} of {len(z)} points, e.g. z = "
                       f"{z[bad][0].tolist()}; shrink the box or fix D")
    asym = np.abs(D[:, 0, 1] - D[:, 1, 0])
    scale = np.abs(D).reshape(len(z), 4).max(axis=1)
    bad = asym > 1e-10 * scale
    if bad.any():
        k = int(np.argmax(bad))
        raise DDMError(f"D(z) must be symmetric, but D12 = {D[k, 0, 1]:.6g} and D21 = "
                       f"{D[k, 1, 0]:.6g} at z = {z[k].tolist()}")
    det = D[:, 0, 0] * D[:, 1, 1] - D[:, 0, 1] ** 2
    bad = ~((D[:, 0, 0] > 0) & (det > 1e-14 * scale ** 2))
    if bad.any():
        k = int(np.argmax(bad))
        raise DDMError(f"D(z) must be positive definite (noise in every direction), but at z = "
                       f"{z[k].tolist()} it is {D[k].tolist()} ({int(bad.sum())} points); the "
                       "entropy production is not finite where D is singular")
    return D


# -- grid ------------------------------------------------------------------------------------------

class _Grid:
    """A rectangular grid in y = T⁻¹ z covering the z-box; cells numbered in C order."""

    def __init__(self, box, n, periodic, T):
        self.T, self.n, self.periodic = T, n, periodic
        self.d = len(n)
        self.N = int(np.prod(n))
        self.Tinv = np.linalg.inv(T)
        self.box = self._y_box(box)
        self.h = (self.box[:, 1] - self.box[:, 0]) / np.array(n)
        self.axes = [self.box[k, 0] + self.h[k] * (np.arange(n[k]) + 0.5) for k in range(self.d)]
        mesh = np.meshgrid(*self.axes, indexing="ij")
        self.centres = np.stack([m.ravel() for m in mesh], axis=1)     # (N, d) in y
        self.index = np.arange(self.N).reshape(n)
        self.cell_volume_z = float(np.prod(self.h) * abs(np.linalg.det(T)))

    def _y_box(self, box):
        """Bounding box (in y) of the image of the z-box's corners under T⁻¹ (§3.3)."""
        if np.allclose(self.T, np.eye(self.d), rtol=0, atol=0):
            return box.copy()
        corners_z = np.stack(np.meshgrid(*box, indexing="ij"), axis=-1).reshape(-1, self.d)
        corners_y = self.to_y(corners_z)
        return np.stack([corners_y.min(axis=0), corners_y.max(axis=0)], axis=1)

    def to_z(self, y):
        return y @ self.T.T

    def to_y(self, z):
        return z @ self.Tinv.T

    def neighbours(self, axis):
        """Cell pairs (i, j = i + e_axis) across every face of the axis, in grid shape."""
        if self.periodic[axis]:
            return self.index, np.roll(self.index, -1, axis=axis)
        m = self.n[axis]
        return (np.take(self.index, np.arange(m - 1), axis=axis),
                np.take(self.index, np.arange(1, m), axis=axis))

    def shifted(self, shift):
        """Cell pairs (i, j = i + shift), shift in {−1, 0, 1}^d, flattened; wrapped on periodic
        axes, dropped where j would leave the box on the others."""
        dst = self.index
        mask = np.ones(self.n, dtype=bool)
        for k, s in enumerate(shift):
            if s == 0:
                continue
            dst = np.roll(dst, -s, axis=k)                     # dst[i] = index[i + s]
            if not self.periodic[k]:
                target = np.arange(self.n[k]) + s
                shape = [1] * self.d
                shape[k] = self.n[k]
                mask &= ((target >= 0) & (target < self.n[k])).reshape(shape)
        return self.index[mask], dst[mask]

    def boundary_cells(self):
        mask = np.zeros(self.n, dtype=bool)
        for k in range(self.d):
            if not self.periodic[k]:
                edge = [slice(None)] * self.d
                edge[k] = [0, self.n[k] - 1]
                mask[tuple(edge)] = True
        return mask.ravel()

    def corners(self):
        edges = [self.box[k, 0] + self.h[k] * np.arange(self.n[k] + 1) for k in range(self.d)]
        if self.d == 1:
            return edges[0] * self.T[0, 0]
        mesh = np.stack(np.meshgrid(*edges, indexing="ij"), axis=-1)
        corners_z = self.to_z(mesh.reshape(-1, 2)).reshape(mesh.shape)
        return corners_z[..., 0], corners_z[..., 1]


# -- Scharfetter–Gummel rates, generator, solve ----------------------------------------------------

def bernoulli(x):
    """B(x) = x / (eˣ − 1), B(0) = 1 (§3.2). expm1 keeps it accurate near 0; the series
    1 − x/2 + x²/12 covers |x| < 1e-10 where x/expm1(x) is 0/0. B(x) → 0 for x → +∞ (underflow
    to 0 past x ≈ 745 is harmless: that rate is negligible) and B(x) ≈ −x for x → −∞."""
    x = np.asarray(x, dtype=float)
    small = np.abs(x) < 1e-10
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        out = x / np.expm1(x)
    return np.where(small, 1.0 - 0.5 * x + x * x / 12.0, out)


def _face_rates(drift, diffusion, grid, axis, D_centres):
    """SG rates across the faces of one axis (module docstring; §3.2 "Grid and rates").

    Pe = 2 f_k h / D_kk at the face midpoint (f_k: the normal component of f_y = T⁻¹ f(T y)),
    k_fwd = D_kk(i) B(−Pe) / (2h²) for i → j, k_bwd = D_kk(j) B(Pe) / (2h²) for j → i, and the exact
    log(k_fwd/k_bwd) = Pe + log(D_kk(i)/D_kk(j)) for the Schnakenberg sum.
    """
    i, j = grid.neighbours(axis)
    i, j = i.ravel(), j.ravel()
    h = grid.h[axis]
    mid_y = grid.centres[i].copy()
    mid_y[:, axis] += 0.5 * h                       # also right for the wrapped face of a circle
    mid_z = grid.to_z(mid_y)
    f_face = grid.to_y(_call_drift(drift, mid_z, grid.d, f"the faces along axis {axis}"))[:, axis]
    D_face = diffusion.diagonal(mid_z)[:, axis]
    D_i, D_j = D_centres[i, axis], D_centres[j, axis]
    Pe = 2.0 * f_face * h / D_face
    return dict(i=i, j=j, axis=axis, h=h, D_face=D_face, a=D_face / (h * h),
                k_fwd=D_i * bernoulli(-Pe) / (2.0 * h * h),
                k_bwd=D_j * bernoulli(Pe) / (2.0 * h * h),
                log_ratio=Pe + np.log(D_i / D_j))


# the four lattice directions of the 2-D tensor scheme (module docstring), as index shifts
_LATTICE = ((1, 0), (0, 1), (1, 1), (1, -1))
DOMINANCE_TOL = 1e-12           # a₁, a₂ down to −1e-12 · D_kk/h_k² are round-off and are clipped


def _lattice_edges(drift, diffusion, grid):
    """Rates of the 2-D tensor scheme on the 8-neighbour lattice (module docstring).

    For each direction v_e (as an index shift s, v_e = (s1 h1, s2 h2)) and each edge i → j = i + s:
    midpoint m = centre_i + v_e/2, D(m), (∇·D)(m), F = D⁻¹(2f − ∇·D) at m, x = v_eᵀF,
    a_e(m) from the split of D, k_fwd = ½ a B(−x), k_bwd = ½ a B(x), log(k_fwd/k_bwd) = x.
    Diagonal edges with a_e = 0 (D12 of the other sign, or 0) are left out.
    """
    h = grid.h
    step = 1e-4 * (grid.box[:, 1] - grid.box[:, 0])
    edges = []
    for shift in _LATTICE:
        i, j = grid.shifted(shift)
        v = np.array(shift, dtype=float) * h
        mid = grid.centres[i] + 0.5 * v               # also right for wrapped (periodic) edges
        D = diffusion.matrix(mid)
        D12 = D[:, 0, 1]
        if shift[0] and shift[1]:                      # diagonal: a± = max(±D12, 0)/(h1 h2)
            a = np.maximum(shift[0] * shift[1] * D12, 0.0) / (h[0] * h[1])
            keep = a > 0
            if not keep.any():
                continue
            i, j, mid, D, a = i[keep], j[keep], mid[keep], D[keep], a[keep]
        else:                                          # axis k: a_k = D_kk/h_k² − |D12|/(h1 h2)
            k = 0 if shift[0] else 1
            full = D[:, k, k] / h[k] ** 2
            a = full - np.abs(D12) / (h[0] * h[1])
            bad = a < -DOMINANCE_TOL * full
            if bad.any():
                _dominance_error(mid[bad], D[bad], h)
            a = np.maximum(a, 0.0)
        f = _call_drift(drift, mid, 2, f"the edge midpoints along {shift}")
        F = np.linalg.solve(D, (2.0 * f - diffusion.divergence(mid, step))[:, :, None])[:, :, 0]
        x = F @ v
        edges.append(dict(i=i, j=j, v=v, a=a, k_fwd=0.5 * a * bernoulli(-x),
                          k_bwd=0.5 * a * bernoulli(x), log_ratio=x))
    return edges


def _dominance_error(z, D, h):
    """The lattice cannot carry this D12 with these cells: say where, and which h2/h1 would."""
    lo = float((np.abs(D[:, 0, 1]) / D[:, 0, 0]).max())          # h2/h1 ≥ |D12|/D11
    hi = float((D[:, 1, 1] / np.abs(D[:, 0, 1])).min())          # h2/h1 ≤ D22/|D12|
    allowed = np.minimum(D[:, 0, 0] * h[1] / h[0], D[:, 1, 1] * h[0] / h[1])
    k = int(np.argmax(np.abs(D[:, 0, 1]) / allowed))
    hint = (f"cells with h2/h1 in [{lo:.3g}, {hi:.3g}] (choose n per axis accordingly) would "
            "satisfy it at these points" if lo <= hi else
            "no single cell shape satisfies it over the box (D is too anisotropic off the grid "
            "axes); rotate the coordinates so that D is closer to diagonal, or use a constant D "
            "(the Cholesky map of §3.3)")
    raise DDMError(
        f"D(z) is too anisotropic off the grid axes for cells of h1 = {h[0]:.4g}, h2 = "
        f"{h[1]:.4g}: at z = {z[k].tolist()}, |D12| = {abs(D[k, 0, 1]):.4g} exceeds "
        f"min(D11 h2/h1, D22 h1/h2) = {allowed[k]:.4g}. The 9-point scheme needs "
        f"|D12| ≤ min(D11 h2/h1, D22 h1/h2) everywhere to stay a valid jump process; {hint}")


def _generator(faces, N):
    """G[to, from] = rate, G[i, i] = −Σ out-rates of i, so dP/dt = G P and 1ᵀG = 0 (§3.2)."""
    rows = np.concatenate([np.concatenate([f["j"], f["i"]]) for f in faces])
    cols = np.concatenate([np.concatenate([f["i"], f["j"]]) for f in faces])
    rates = np.concatenate([np.concatenate([f["k_fwd"], f["k_bwd"]]) for f in faces])
    out = np.bincount(cols, weights=rates, minlength=N)
    diag = np.arange(N)
    return sp.csc_matrix((np.concatenate([rates, -out]),
                          (np.concatenate([rows, diag]), np.concatenate([cols, diag]))),
                         shape=(N, N))


def _stationary(G, f_centres):
    """Solve G P = 0, Σ P = 1 (§3.2 "Solving"); returns (P, residual = max |G P| / max P).

    §3.2 replaces one row by ones. That dense row makes the sparse LU 4-10× slower on a 2-D grid
    (3.8 s against 0.7 s at n = 400), so the row of one cell r is first replaced by e_rᵀ instead
    (P_r = 1, normalised afterwards). This is the same system: 1ᵀG = 0 makes the dropped row a
    combination of the others, and pinning one cell of a chain with one recurrent class fixes the
    scale. r is the cell with the smallest |f|, usually a fixed point that carries mass, so that
    P/P_r cannot overflow. If the pinned solve fails (singular, non-finite, or a large residual,
    e.g. when r is a cell that the chain cannot reach), the ones-row system of §3.2 is solved.
    MMD on Aᵀ + A suits the near-symmetric 5-point pattern; G is column diagonally dominant, so the
    LU needs no pivoting for stability.
    """
    N = G.shape[0]
    r = int(np.argmin(np.sum(f_centres ** 2, axis=1)))
    best = _checked_solve(G, r, np.array([r]), np.array([1.0]))
    if best is None or best[2] > RESIDUAL_WARN:
        ones = _checked_solve(G, r, np.arange(N), np.ones(N))
        if ones is not None and (best is None or ones[2] < best[2]):
            best = ones
    if best is None:
        raise DDMError("the stationary solve failed (singular system or non-finite mass): the jump "
                       "process is not irreducible; check that the drift is finite, that D > 0 "
                       "everywhere in the box and that D is not tiny relative to the drift")
    return best[0], best[1]


def _checked_solve(G, r, cols, values):
    """(P, residual, badness) from _solve_with_row, normalised, or None if the solve failed.

    badness = residual + (most negative P)/max P: a pinned solve far in a tail can come back
    finite, with a small residual, yet with large negative masses (cancellation), so both count.
    """
    try:
        P = _solve_with_row(G, r, cols, values)
    except RuntimeError:                            # SuperLU: "Factor is exactly singular"
        return None
    with np.errstate(invalid="ignore", over="ignore"):
        total = P.sum()
    if not (np.all(np.isfinite(P)) and np.isfinite(total) and total > 0):
        return None
    P = P / total
    residual = float(np.abs(G @ P).max() / P.max())
    return P, residual, residual + max(0.0, -P.min()) / P.max()


def _solve_with_row(G, r, cols, values):
    """Solve A P = e_r where A is G with row r replaced by `values` at `cols`."""
    N = G.shape[0]
    coo = G.tocoo()
    keep = coo.row != r
    A = sp.csc_matrix((np.concatenate([coo.data[keep], values]),
                       (np.concatenate([coo.row[keep], np.full(len(cols), r)]),
                        np.concatenate([coo.col[keep], cols]))), shape=(N, N))
    rhs = np.zeros(N)
    rhs[r] = 1.0
    return spla.splu(A, permc_spec="MMD_AT_PLUS_A").solve(rhs)


# -- entropy production ----------------------------------------------------------------------------

def _schnakenberg(face, P):
    """Φ_h = Σ_faces (a − b) log(a/b), a = k_fwd P_i, b = k_bwd P_j (§3.2 "EPR of the chain").

    Each unordered pair once; pairs with a zero flux (P = 0 or an underflowed rate) are skipped.
    log(a/b) uses the exact log(k_fwd/k_bwd), so it stays right where one rate underflows.
    """
    Pi, Pj = P[face["i"]], P[face["j"]]
    a, b = face["k_fwd"] * Pi, face["k_bwd"] * Pj
    ok = (a > 0) & (b > 0)
    log_ratio = face["log_ratio"][ok] + np.log(Pi[ok]) - np.log(Pj[ok])
    return float(np.sum((a[ok] - b[ok]) * log_ratio))


def _face_epr(face, P):
    """Φ_h' = Σ_faces F² h_k² / (D_p,k P̄), F = k_fwd P_i − k_bwd P_j, P̄ = (P_i + P_j)/2 (§3.2),
    over faces whose two cells hold more than 1e-12 · max P (round-off blows up below)."""
    Pi, Pj = P[face["i"]], P[face["j"]]
    ok = np.minimum(Pi, Pj) > FACE_MASS_FLOOR * P.max()
    F = face["k_fwd"][ok] * Pi[ok] - face["k_bwd"][ok] * Pj[ok]
    P_bar = 0.5 * (Pi[ok] + Pj[ok])
    # F² h_k²/(½ D_kk P̄) = F²/(½ a P̄) with the conductance a = D_kk/h_k²; the same form with a_e
    # serves the lattice edges of the 2-D tensor scheme (the discrete Σ_e j_e²/(½ a_e p))
    return float(np.sum(F ** 2 / (0.5 * face["a"][ok] * P_bar)))


def _observed_order(epr, ratios):
    """log(|Φ_h − Φ_{h/r}| / |Φ_{h/r} − Φ_{h/r²}|) / log r, or nan when it is undefined."""
    if len(epr) < 3 or not np.isclose(ratios[-1], ratios[-2], rtol=1e-6):
        return float("nan")
    d1, d2 = epr[-3] - epr[-2], epr[-2] - epr[-1]
    if d1 == 0 or d2 == 0 or np.sign(d1) != np.sign(d2):
        return float("nan")
    return float(np.log(d1 / d2) / np.log(ratios[-1]))


# -- fields on the grid ----------------------------------------------------------------------------

def _fields(grid, diffusion, faces, P, D_centres):
    """f_rev and J at the cell centres, in z coordinates (§3.2 "Helmholtz–Hodge split").

    f_rev: in y, (f_rev)_k = ½ D_kk ∂_k log(D_kk p) — that is ½ D ∇log p for constant D and
    ½ D (log p)' + ½ D' for state-dependent D in 1-D (§1) — by central differences (second-order
    one-sided at walls, wrapped on periodic axes); mapped back by f_z = T f_y since
    ½ D ∇_z log p = T (½ D_y ∇_y log p).
    J: SG face fluxes divided by the face area, averaged over the two faces of a cell along each
    axis (walls carry no flux); mapped back by J_z = T J_y / |det T|.
    """
    shape = grid.n
    p = P / np.prod(grid.h)
    f_rev_y = np.empty((grid.N, grid.d))
    J_y = np.empty((grid.N, grid.d))
    for face in faces:
        k = face["axis"]
        log_q = np.log(np.maximum(D_centres[:, k] * p, LOG_FLOOR)).reshape(shape)
        f_rev_y[:, k] = 0.5 * D_centres[:, k] * _central_difference(log_q, grid.h[k], k,
                                                                      grid.periodic[k]).ravel()
        area = np.prod(grid.h) / grid.h[k]
        flux = ((face["k_fwd"] * P[face["i"]] - face["k_bwd"] * P[face["j"]]) / area)
        J_y[:, k] = _face_to_centre(flux, shape, k, grid.periodic[k]).ravel()
    return grid.to_z(f_rev_y), grid.to_z(J_y) / abs(np.linalg.det(grid.T))


def _tensor_fields(grid, diffusion, edges, P):
    """f_rev, J and D at the cell centres for the 2-D tensor scheme (grid coordinates = z).

    f_rev = ½ D ∇log p + ½ ∇·D (docs/irreversibility.md §1), ∇log p by central differences
    (second-order one-sided at walls, wrapped on periodic axes), ∇·D as in _lattice_edges.
    J = Σ_e v_e j_e: each edge's mass flux F_e = k_fwd P_i − k_bwd P_j, times v_e / (cell
    volume), is shared half-and-half between its two cells (walls carry 0); for the axis edges
    this is the mean of the two face flux densities, as in _fields.
    """
    z = grid.centres
    D = diffusion.matrix(z)
    div_D = diffusion.divergence(z, 1e-4 * (grid.box[:, 1] - grid.box[:, 0]))
    log_p = np.log(np.maximum(P / np.prod(grid.h), LOG_FLOOR)).reshape(grid.n)
    grad = np.stack([_central_difference(log_p, grid.h[k], k, grid.periodic[k]).ravel()
                     for k in range(2)], axis=1)
    f_rev = 0.5 * np.einsum("kab,kb->ka", D, grad) + 0.5 * div_D
    J = np.zeros((grid.N, 2))
    for e in edges:
        F = e["k_fwd"] * P[e["i"]] - e["k_bwd"] * P[e["j"]]
        half = 0.5 * (np.bincount(e["i"], weights=F, minlength=grid.N)
                      + np.bincount(e["j"], weights=F, minlength=grid.N))
        J += half[:, None] * e["v"][None, :]
    return f_rev, J / np.prod(grid.h), D


def _central_difference(u, h, axis, periodic):
    if periodic:
        return (np.roll(u, -1, axis=axis) - np.roll(u, 1, axis=axis)) / (2.0 * h)
    return np.gradient(u, h, axis=axis, edge_order=2)


def _face_to_centre(flux, shape, axis, periodic):
    """Mean of the upper and lower face values of each cell along the axis (walls: 0)."""
    face_shape = list(shape)
    if not periodic:
        face_shape[axis] -= 1
    F = flux.reshape(face_shape)
    if periodic:
        return 0.5 * (F + np.roll(F, 1, axis=axis))
    pad = [(0, 0)] * len(shape)
    pad[axis] = (1, 1)
    Fp = np.pad(F, pad)                              # wall faces carry no flux
    lower = np.take(Fp, np.arange(0, shape[axis]), axis=axis)
    upper = np.take(Fp, np.arange(1, shape[axis] + 1), axis=axis)
    return 0.5 * (lower + upper)


def _diagnose(residual, mass_min, mass_max, boundary_mass):
    """The §3.2 checks, as messages that say what to do."""
    found = []
    if boundary_mass > BOUNDARY_MASS_WARN:
        found.append(f"boundary mass {boundary_mass:.3g} > {BOUNDARY_MASS_WARN:g}: the box is too "
                     "small for the stationary law; enlarge it until Φ stops changing")
    if not residual <= RESIDUAL_WARN:
        found.append(f"residual |GP|/max P = {residual:.3g} > {RESIDUAL_WARN:g}: the linear "
                     "solve is inaccurate; use fewer cells or a smaller box with less extreme "
                     "drift")
    if mass_min < -NEGATIVE_MASS_WARN * mass_max:
        found.append(f"negative cell mass {mass_min:.3g} (clipped to 0): the solve is inaccurate; "
                     "states separated by barriers of more than ~700 in log p cannot be balanced "
                     "in double precision: increase D or shrink the box")
    return found
