"""Stationary Fokker–Planck grid solver against the exact values of docs/irreversibility.md §6.

Project convention: D = g gᵀ (physics D_p = D/2); Φ is the same number in both conventions.
Each expected value below is copied from docs/irreversibility.md (§2.2, §3.2, §3.3, §5.3, §6) or
is a closed form computed here independently of the solver.
"""
import numpy as np
import pytest

from ddm_numba.analysis import fokker_planck as fp
from ddm_numba.analysis.fokker_planck import refine, solve_stationary
from ddm_numba.errors import DDMError

ROT = np.array([[0.0, -1.0], [1.0, 0.0]])       # J of §2.1: Jz rotates z by +90°


def linear(B):
    """f(z) = −B z, vectorised."""
    B = np.asarray(B, float)
    return lambda z: -z @ B.T


def ring(k, w, d):
    """T10 in project form f = −(D/2 + wJ)∇U, U = k(r² − 1)²/4, D = 2d·I."""
    def drift(z):
        grad_U = k * ((z ** 2).sum(axis=1, keepdims=True) - 1.0) * z
        return -(d * grad_U + grad_U @ (w * ROT).T)
    return drift


def velocity(r):
    """J/p from the face-flux current, 0 where p = 0."""
    p = r.density[..., None]
    return np.divide(r.J, p, out=np.zeros_like(r.J), where=p > 0)


def weighted_rel_err(mass, field, exact):
    """‖field − exact‖ / ‖exact‖ in L²(P) over the cells."""
    P = mass.reshape(-1)
    a, b = field.reshape(len(P), -1), exact.reshape(len(P), -1)
    return float(np.sqrt(np.sum(P * ((a - b) ** 2).sum(1)) / np.sum(P * (b ** 2).sum(1))))


# -- T1: OU rotation, Φ = 2w² ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def ou_rotation():
    """B = I + J, D_p = I (project D = 2I), box [−7, 7]², h = 0.4 / 0.2 / 0.1."""
    return refine(linear(np.eye(2) + ROT), 2 * np.eye(2), [[-7, 7], [-7, 7]], (35, 70, 140))


def test_ou_rotation_converges_to_2_at_second_order(ou_rotation):
    rf = ou_rotation
    err = np.abs(rf.epr - 2.0)
    # §2.2 table: 1.97423 / 1.99339 / 1.99834 at h = 0.4 / 0.2 / 0.1, i.e. error ≈ 0.166 h²
    assert np.all(err < 0.2 * rf.h ** 2)
    assert np.all(np.diff(err) < 0)
    assert rf.order == pytest.approx(2.0, abs=0.1)
    # From the same table, Richardson on h = 0.2, 0.1 leaves 1e-5 (the h⁴ remainder); allow 10×.
    assert abs(rf.richardson - 2.0) < 1e-4
    # Φ_h' (face currents) also converges at O(h²), from below for the OU (§3.2)
    assert np.all(rf.epr_face < 2.0) and np.all(np.diff(np.abs(rf.epr_face - 2.0)) < 0)
    assert abs(rf.epr_face[-1] - 2.0) < 0.6 * rf.h[-1] ** 2


def test_ou_rotation_split_matches_closed_form(ou_rotation):
    """§2.2: f_rev = −z, f_irr = −wJz, J_s = p f_irr, and E[f_irrᵀ(D/2)⁻¹f_irr] = Φ."""
    r = ou_rotation.results[-1]
    z = r.points
    assert weighted_rel_err(r.mass, r.f_rev, -z) < 5e-3
    assert weighted_rel_err(r.mass, r.f_irr, -z @ ROT.T) < 5e-3
    assert weighted_rel_err(r.mass, velocity(r), -z @ ROT.T) < 5e-3
    assert r.epr_hhd == pytest.approx(2.0, rel=5e-3)
    S = np.eye(2)                                    # Lyapunov solution of §2.2
    p_exact = np.exp(-0.5 * (z ** 2).sum(-1)) / (2 * np.pi * np.sqrt(np.linalg.det(S)))
    assert np.abs(r.density - p_exact).max() / p_exact.max() < 2e-3


# -- §3.2 recommended checks -----------------------------------------------------------------------

def test_grid_checks_of_section_3_2(ou_rotation):
    r = ou_rotation.results[1]                       # n = 70
    assert r.mass.sum() == pytest.approx(1.0, abs=1e-12)
    assert r.residual < 1e-10
    assert r.mass_min >= -1e-16 and r.mass.min() >= 0.0
    assert r.boundary_mass < 1e-9 and r.warnings == []
    # the density integrates to one and the arrays have the documented shapes
    assert r.points.shape == (70, 70, 2) and r.f_irr.shape == (70, 70, 2)
    assert r.density.sum() * np.prod(r.h) == pytest.approx(1.0, rel=1e-12)
    X, Y = r.corners
    assert X.shape == Y.shape == (71, 71)
    centre = 0.25 * (X[:-1, :-1] + X[1:, :-1] + X[:-1, 1:] + X[1:, 1:])
    np.testing.assert_allclose(centre, r.points[..., 0], atol=1e-12)


def test_enlarging_the_box_leaves_epr_unchanged(ou_rotation):
    """§3.2 check 2: same h = 0.2, box [−8, 8]² instead of [−7, 7]²."""
    bigger = solve_stationary(linear(np.eye(2) + ROT), 2 * np.eye(2), [[-8, 8], [-8, 8]], 80)
    assert bigger.epr == pytest.approx(ou_rotation.epr[1], rel=1e-9)


def test_small_box_is_flagged():
    r = solve_stationary(linear(np.eye(2) + ROT), 2 * np.eye(2), [[-1.5, 1.5], [-1.5, 1.5]], 30)
    assert r.boundary_mass > 1e-8
    assert any("box is too small" in w for w in r.warnings)


def test_rectangular_grid_shapes_and_corners():
    r = solve_stationary(linear(np.eye(2) + ROT), 2 * np.eye(2), [[-7, 7], [-6, 6]], (40, 30))
    assert r.mass.shape == r.density.shape == (40, 30)
    assert r.corners[0].shape == (41, 31)
    assert r.h == pytest.approx((14 / 40, 12 / 30))


# -- T3: non-diagonal D through the Cholesky map ---------------------------------------------------

B2 = np.array([[1.0, 0.5], [-0.3, 2.0]])
D2 = np.array([[1.0, 0.2], [0.2, 2.0]])             # project D = 2 D_p
S2 = np.array([[125 / 258, 4 / 129], [4 / 129, 217 / 430]])


def test_nondiagonal_D_matches_121_over_588():
    exact = 121 / 588
    # independent check of the quoted S: B S + S Bᵀ = D
    np.testing.assert_allclose(B2 @ S2 + S2 @ B2.T, D2, atol=1e-14)
    rf = refine(linear(B2), D2, [[-5, 5], [-5, 5]], (100, 200))
    # §3.3 quotes 0.204862 / 0.205552 at n = 100 / 200: errors 9e-4 / 2.3e-4 (O(h²))
    assert abs(rf.epr[-1] - exact) < 5e-4
    assert abs(rf.epr[0] - exact) > abs(rf.epr[-1] - exact)
    assert abs(rf.richardson - exact) < 2e-5
    r = rf.results[0]
    np.testing.assert_allclose(r.transform @ r.transform.T, D2, atol=1e-14)
    z = r.points.reshape(-1, 2)
    quad = np.einsum("ki,ij,kj->k", z, np.linalg.inv(S2), z)
    p_exact = np.exp(-0.5 * quad) / (2 * np.pi * np.sqrt(np.linalg.det(S2)))
    assert np.abs(r.density.reshape(-1) - p_exact).max() / p_exact.max() < 1e-3
    assert r.warnings == []


# -- T10: noisy ring -------------------------------------------------------------------------------

def test_ring_k1_converges_with_exact_density_and_current():
    exact = 4.311825450981
    rf = refine(ring(1, 1, 1), 2 * np.eye(2), [[-3.5, 3.5], [-3.5, 3.5]], (50, 100, 200))
    assert rf.order == pytest.approx(2.0, abs=0.15)
    assert np.all(np.diff(np.abs(rf.epr - exact)) < 0)
    assert abs(rf.richardson - exact) / exact < 5e-5
    r = rf.results[-1]
    z = r.points
    U = ((z ** 2).sum(-1) - 1.0) ** 2 / 4
    P_exact = np.exp(-U) / np.exp(-U).sum()         # p_s ∝ e^{−U} exactly
    assert np.abs(r.mass - P_exact).max() / P_exact.max() < 1e-3
    f_irr_exact = -(((z ** 2).sum(-1, keepdims=True) - 1.0) * z) @ ROT.T      # −wJ∇U
    assert weighted_rel_err(r.mass, r.f_irr, f_irr_exact) < 5e-3
    assert weighted_rel_err(r.mass, velocity(r), f_irr_exact) < 5e-3
    # f_rev ⟂ f_irr in L²(p; D⁻¹) and the f_irr sum agree with Φ at O(h²) (§3.2 checks 5-6)
    inner = np.sum(r.mass[..., None] * r.f_rev * r.f_irr)      # (D/2)⁻¹ = I here
    assert abs(inner) < 5e-3 * exact
    assert r.epr_hhd == pytest.approx(exact, rel=5e-3)


def test_ring_k4_reproduces_reference_table():
    """§3.2 table: h = 0.1 / 0.05 / 0.025 → 20.8075 / 19.8960 / 19.6767, exact 19.604339882059."""
    exact = 19.604339882059
    rf = refine(ring(4, 1, 0.5), np.eye(2), [[-2.5, 2.5], [-2.5, 2.5]], (50, 100, 200))
    np.testing.assert_allclose(rf.epr, [20.8075, 19.8960, 19.6767], atol=2e-4)
    assert rf.order == pytest.approx(2.0, abs=0.15)
    assert abs(rf.richardson - exact) / exact < 1e-4


# -- T11: 1-D circle and intervals -----------------------------------------------------------------

def tilted_cosine(F, V0):
    return lambda theta: F + V0 * np.sin(theta)


def test_circle_tilted_periodic_potential():
    r = solve_stationary(tilted_cosine(1.0, 1.0), [[1.0]], [[0, 2 * np.pi]], 200, periodic=True)
    assert r.epr == pytest.approx(1.2530464, abs=2e-7)   # §3.3: SG on 200 cells, 8 digits
    assert r.J[:, 0] == pytest.approx(0.09971426, abs=2e-8)
    assert r.boundary_mass == 0.0                        # no walls on a circle
    assert r.corners.shape == (201,)


def test_circle_without_potential_is_F_squared_over_Dp():
    r = solve_stationary(tilted_cosine(1.0, 0.0), [[1.0]], [[0, 2 * np.pi]], 64, periodic=True)
    assert r.epr == pytest.approx(1.0 ** 2 / 0.5, rel=1e-12)
    assert r.density == pytest.approx(1 / (2 * np.pi), rel=1e-12)


@pytest.mark.parametrize("drift", [lambda z: z - z ** 3, tilted_cosine(1.0, 1.0)])
def test_interval_problems_have_zero_epr(drift):
    """A path graph satisfies detailed balance: Φ_h = 0 exactly (§3.2 check 3)."""
    r = solve_stationary(drift, [[1.0]], [[-3, 3]], 200)
    assert abs(r.epr) < 1e-13 and abs(r.epr_face) < 1e-13
    assert np.abs(r.J).max() < 1e-12 * r.density.max()


# -- 1-D multiplicative noise (Itô) ----------------------------------------------------------------

def test_multiplicative_noise_density_and_zero_epr():
    """f = −z, D = g² = a + b z²: zero flux gives p ∝ (a + b z²)^(−1−1/b) (Itô)."""
    a, b = 0.2, 0.5
    errors = []
    for n in (300, 600):
        r = solve_stationary(lambda z: -z, lambda z: (a + b * z ** 2)[:, :, None], [[-15, 15]], n)
        z = r.points[:, 0]
        p_exact = (a + b * z ** 2) ** (-1 - 1 / b)
        p_exact /= p_exact.sum() * r.h[0]               # reflecting walls: exact law restricted
        errors.append(np.abs(r.density - p_exact).max() / p_exact.max())
        assert abs(r.epr) < 1e-13
        assert np.abs(r.J).max() < 1e-12 * r.density.max()
        # f_rev = ½D(log p)' + ½D' equals f exactly (J = 0); central differences: O(h²)
        assert weighted_rel_err(r.mass, r.f_rev, r.f) < 0.8 * r.h[0] ** 2
        assert r.warnings == []
    assert errors[1] < 1e-3
    assert errors[0] / errors[1] == pytest.approx(4.0, rel=0.1)  # O(h²)


# -- T12: 2-D tanh nets ----------------------------------------------------------------------------

@pytest.mark.parametrize("W, exact", [
    ([[0, 1.5], [1.5, 0]], 0.06407),                  # symmetric W, yet Φ > 0
    ([[0, 1.5], [-1.5, 0]], 2.4443),
])
def test_tanh_net(W, exact):
    W = np.array(W, float)
    rf = refine(lambda z: -z + np.tanh(z) @ W.T, np.eye(2), [[-5, 5], [-5, 5]], (50, 100, 200))
    assert rf.richardson == pytest.approx(exact, rel=1e-3)
    assert rf.order == pytest.approx(2.0, abs=0.15)


# -- T13: low-rank latent drift --------------------------------------------------------------------

def lowrank(decoders, M, c, b):
    """f(z) = −z + Σ_i a_i tanh(m_iᵀz + c_i) + b (τ = 1); decoders a_i as the columns."""
    return lambda z: -z + np.tanh(z @ M.T + c) @ decoders.T + b


def test_lowrank_aligned_decoders_are_reversible_and_symmetric_W_is_not():
    rng = np.random.default_rng(1)
    N, D = 6, np.eye(2)
    M = rng.normal(size=(N, 2))
    c = 0.5 * rng.normal(size=N)
    b = 0.3 * rng.normal(size=2)
    kappa = rng.uniform(0.3, 1.0, size=N) * np.array([1, -1, 1, -1, 1, -1])
    aligned = (D @ M.T) * kappa                       # a_i = κ_i D m_i
    W = M @ aligned
    assert np.linalg.norm(W - W.T) / 2 / np.linalg.norm(W) > 0.3     # strongly asymmetric W
    box = [[-6, 6], [-6, 6]]
    rf = refine(lowrank(aligned, M, c, b), D, box, (40, 80, 160))
    assert np.all(np.abs(rf.epr) < 1e-6)
    assert np.all(np.abs(rf.epr[:-1]) / np.abs(rf.epr[1:]) > 10)    # O(h⁴): ÷16 per halving
    assert rf.order == pytest.approx(4.0, abs=0.3)

    K = 0.4 * np.array([[1, 0.6], [0.6, 0.2]])       # symmetric W = M K Mᵀ, K ≠ cD
    sym = refine(lowrank(K @ M.T, M, c, b), D, box, (40, 80))
    assert sym.epr[-1] > 1e-3
    assert abs(sym.epr[-1] - sym.epr[0]) < 0.05 * sym.epr[-1]       # far above the grid error
    assert sym.epr[-1] > 1e3 * np.abs(rf.epr).max()


# -- gradient drifts -------------------------------------------------------------------------------

def test_linear_gradient_drift_has_zero_epr():
    """f = −(D/2) H z, H symmetric: detailed balance; exactly 0 on the grid (§3.2 check 3)."""
    H = np.array([[2.0, 0.5], [0.5, 1.0]])
    for D in (np.diag([1.0, 2.0]), np.array([[1.0, 0.3], [0.3, 0.8]])):
        r = solve_stationary(lambda z: -(z @ H.T) @ D.T / 2, D, [[-7, 7], [-7, 7]], 60)
        assert abs(r.epr) < 1e-13


def test_nonlinear_gradient_drift_epr_vanishes_at_fourth_order():
    def grad_psi(z):
        z1, z2 = z[:, 0], z[:, 1]
        return np.stack([z1 ** 3 - z1 + 0.5 * z2, z2 + 0.5 * z1 + 0.2 * z2 ** 3], axis=1)
    D = np.array([[1.0, 0.3], [0.3, 0.8]])
    rf = refine(lambda z: -grad_psi(z) @ D.T / 2, D, [[-3.5, 3.5], [-4, 4]], (35, 70, 140))
    assert np.all(np.abs(rf.epr) < 1e-6)
    assert rf.order == pytest.approx(4.0, abs=0.3)


# -- pieces ----------------------------------------------------------------------------------------

def test_bernoulli_function():
    x = np.array([-800.0, -30.0, -1.0, -1e-12, 0.0, 1e-12, 1e-6, 1.0, 30.0, 800.0])
    B = fp.bernoulli(x)
    np.testing.assert_allclose(B[[2, 7]], [1 / (1 - np.exp(-1.0)), 1 / (np.e - 1)], rtol=1e-15)
    assert B[4] == 1.0 and B[0] == 800.0 and B[-1] == 0.0
    np.testing.assert_allclose(fp.bernoulli(-x) - B, x, rtol=1e-12, atol=1e-15)  # k₊ − k₋ = f/h
    assert np.all(np.isfinite(B)) and np.all(B >= 0)


def sg_generator(drift, D, box, n):
    """The SG generator of a 1-D problem, built from the module's pieces."""
    box = np.array(box, float)
    grid = fp._Grid(box, (n,), (False,), np.eye(1))
    diffusion = fp._Diffusion(D, 1, (False,))
    D_centres = diffusion.diagonal(grid.centres)
    return fp._generator([fp._face_rates(drift, diffusion, grid, 0, D_centres)], grid.N)


def test_solve_falls_back_to_the_ones_row_when_the_pinned_cell_is_unreachable():
    """With D = 1e-3 the outward SG rates near the walls underflow to 0, so the outer cells hold no
    mass. Pinning one of them (P_r = 1) gives a singular system; the ones-row system of §3.2 must
    then take over and give the same law as a well-pinned solve."""
    args = (lambda z: -z, [[1e-3]], [[-10, 10]], 200)
    G = sg_generator(*args)
    assert fp._checked_solve(G, 0, np.array([0]), np.array([1.0])) is None
    f_min_at_wall = np.ones((200, 1))
    f_min_at_wall[0] = 0.0                           # makes _stationary pin cell 0 first
    P, residual = fp._stationary(G, f_min_at_wall)
    reference = solve_stationary(*args)
    assert residual < 1e-10 and reference.residual < 1e-10
    np.testing.assert_allclose(P, reference.mass, rtol=1e-9, atol=1e-15)
    assert reference.mass[99] == pytest.approx(0.5, rel=1e-6)       # symmetric, sharply peaked


# -- bad input -------------------------------------------------------------------------------------

def good_drift(z):
    return -z


@pytest.mark.parametrize("kwargs, match", [
    (dict(box=[[-1, 1]] * 3, D=np.eye(3)), "d = 1 or 2"),
    (dict(n=4), "too small"),
    (dict(n=(20, 20, 20)), "tuple of 2"),
    (dict(D=[[1.0, 2.0], [2.0, 1.0]]), "positive definite"),
    (dict(D=[[1.0, 0.1], [0.0, 1.0]]), "symmetric"),
    (dict(D=np.eye(3)), r"\(2, 2\) matrix"),
    (dict(D=lambda z: np.ones((len(z), 1, 1))), r"must return shape \(\d+, 2, 2\)"),
    (dict(D=[[1.0, 0.2], [0.2, 1.0]], periodic=True), "periodic axes need a diagonal D"),
    (dict(drift=lambda z: -z[:, 0]), "drift returned shape"),
    (dict(drift=lambda z: np.where(z > 2, np.nan, -z)), "non-finite"),
    (dict(drift="not callable"), "callable"),
    (dict(box=[[1, -1], [-1, 1]]), "low < high"),
])
def test_bad_input_is_explained(kwargs, match):
    args = dict(drift=good_drift, D=np.eye(2), box=[[-3, 3], [-3, 3]], n=20) | kwargs
    with pytest.raises(DDMError, match=match):
        solve_stationary(**args)


def test_bad_state_dependent_D_is_explained():
    with pytest.raises(DDMError, match="> 0"):
        solve_stationary(good_drift, lambda z: z[:, :, None], [[-1, 1]], 20)
    with pytest.raises(DDMError, match="shape"):
        solve_stationary(good_drift, lambda z: np.ones((len(z), 2)), [[-1, 1]], 20)


def test_refine_needs_two_increasing_grids():
    with pytest.raises(DDMError, match="at least two"):
        refine(good_drift, np.eye(2), [[-3, 3], [-3, 3]], (20,))
    with pytest.raises(DDMError, match="increasing"):
        refine(good_drift, np.eye(2), [[-3, 3], [-3, 3]], (40, 20))
    assert issubclass(DDMError, ValueError)
