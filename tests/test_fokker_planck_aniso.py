"""Grid Fokker–Planck solver with state-dependent, anisotropic D in 2-D (issue 16, part 1).

Project convention: dz = f dt + g dB, D = g gᵀ (no ½), J = f p − ½ ∇·(D p), Φ = 2 E[f_irrᵀ D⁻¹ f_irr].

The exact case is constructed so that its stationary law and current are known in closed form:

    U(z) = z1⁴/4 − z1²/2 + z2²/2 + c z1 z2,   p_s ∝ e^{−U},
    f = f_rev + f_irr,   f_rev = ½ D ∇log p_s + ½ ∇·D = −½ D ∇U + ½ ∇·D,   f_irr = −w R ∇U,

with R = [[0, −1], [1, 0]] (a 90° rotation). Stationarity: J = f p − ½ ∇·(D p) = p f_irr since
p f_rev = ½ ∇·(D p) by construction, and ∇·(p f_irr) = w Σ_ij R_ij ∂_i∂_j e^{−U} = 0 because R is
antisymmetric. So p_s is exact, J_s = p_s f_irr, and

    Φ = 2 w² E_ps[(R∇U)ᵀ D⁻¹ (R∇U)],

a smooth 2-D integral, computed here by tensor Gauss–Legendre quadrature (independent of the
solver, converged to 1e-12: 240 and 360 nodes per axis agree). D(z) is state dependent in every entry,
off-diagonal, and D12 changes sign in the box (so both diagonal edge families are used):

    D11 = 1.2 + 0.4 tanh z1,  D22 = 0.9 + 0.3 cos z2,  D12 = 0.4 sin(z1 + z2/2),

diagonally dominant for cells with 0.5 ≤ h2/h1 ≤ 1.5 (|D12| ≤ 0.4 ≤ min D11 h2/h1, D22 h1/h2).
The drift uses the analytic ∇·D; the solver only sees D and differentiates it numerically.
"""
from functools import lru_cache

import numpy as np
import pytest

from ddm_numba.analysis.fokker_planck import refine, solve_stationary
from ddm_numba.errors import DDMError

R = np.array([[0.0, -1.0], [1.0, 0.0]])
C, W = 0.3, 1.0
BOX = [[-3.6, 3.6], [-5.4, 5.4]]                  # boundary mass < 1e-6 at n = 80


def U(z1, z2):
    return z1 ** 4 / 4 - z1 ** 2 / 2 + z2 ** 2 / 2 + C * z1 * z2


def grad_U(z):
    z1, z2 = z[:, 0], z[:, 1]
    return np.stack([z1 ** 3 - z1 + C * z2, z2 + C * z1], axis=1)


def D_of(z):
    z1, z2 = z[:, 0], z[:, 1]
    D = np.empty((len(z), 2, 2))
    D[:, 0, 0] = 1.2 + 0.4 * np.tanh(z1)
    D[:, 1, 1] = 0.9 + 0.3 * np.cos(z2)
    D[:, 0, 1] = D[:, 1, 0] = 0.4 * np.sin(z1 + 0.5 * z2)
    return D


def div_D(z):
    """(∇·D)_i = Σ_j ∂_j D_ij: (∂1 D11 + ∂2 D12, ∂1 D21 + ∂2 D22), by hand."""
    z1, z2 = z[:, 0], z[:, 1]
    c = np.cos(z1 + 0.5 * z2)
    return np.stack([0.4 / np.cosh(z1) ** 2 + 0.2 * c, 0.4 * c - 0.3 * np.sin(z2)], axis=1)


def f_irr_exact(z, w=W):
    return -w * grad_U(z) @ R.T


def drift(z, w=W):
    return (-0.5 * np.einsum("kab,kb->ka", D_of(z), grad_U(z)) + 0.5 * div_D(z)
            + f_irr_exact(z, w))


@lru_cache(maxsize=None)
def exact_epr(nodes, L=8.0):
    """Φ = 2 E[f_irrᵀ D⁻¹ f_irr] under p ∝ e^{−U} by Gauss–Legendre on [−L, L]² (e^{−U} < e^{−40}
    outside)."""
    x, wq = np.polynomial.legendre.leggauss(nodes)
    x, wq = L * x, L * wq
    Z1, Z2 = np.meshgrid(x, x, indexing="ij")
    weight = (np.outer(wq, wq) * np.exp(-U(Z1, Z2))).ravel()
    z = np.stack([Z1.ravel(), Z2.ravel()], axis=1)
    fi = f_irr_exact(z)
    D = D_of(z)
    # fᵀD⁻¹f for 2×2 D: (D22 f1² − 2 D12 f1 f2 + D11 f2²) / det D
    quad = ((D[:, 1, 1] * fi[:, 0] ** 2 - 2 * D[:, 0, 1] * fi[:, 0] * fi[:, 1]
             + D[:, 0, 0] * fi[:, 1] ** 2) / (D[:, 0, 0] * D[:, 1, 1] - D[:, 0, 1] ** 2))
    return float(weight @ (2 * quad) / weight.sum())


def exact_mass(r):
    """e^{−U} at the cell centres, normalised like the grid's masses (midpoint rule, O(h²))."""
    p = np.exp(-U(r.points[..., 0], r.points[..., 1]))
    return p / p.sum()


@pytest.fixture(scope="module")
def study():
    return refine(drift, D_of, BOX, (40, 80, 160))


def test_quadrature_reference_is_converged():
    assert exact_epr(240) == pytest.approx(exact_epr(360), rel=1e-12)
    assert exact_epr(360) == pytest.approx(6.7690596187, rel=1e-9)   # recorded for issue 16


def test_epr_converges_at_second_order_to_the_exact_value(study):
    """Φ_h → Φ at O(h²): measured errors 16.1 %, 3.39 %, 0.797 % at n = 40, 80, 160 (error ratio
    4.25 for the last halving; 4.07 for 160 → 320); Richardson from 80 and 160: 6.7646 against
    6.76906 (−6.6e-4; from 160 and 320: −4e-5). Tolerances: the ratio within [3.5, 4.8] (O(h²)
    with its O(h³) remainder), the observed order in [1.8, 2.6], Richardson within 2e-3."""
    exact = exact_epr(360)
    err = np.abs(study.epr - exact) / exact
    assert err[2] < 0.01
    assert 3.5 < err[1] / err[2] < 4.8
    assert 1.8 < study.order < 2.6
    assert study.richardson == pytest.approx(exact, rel=2e-3)
    # Φ_h' (face currents) converges to the same value, from the same side
    assert study.epr_face[-1] == pytest.approx(exact, rel=0.01)
    for r in study.results:
        assert r.residual < 1e-8 and r.mass_min > -1e-12


def test_density_current_and_split_match_the_construction(study):
    """At n = 160: p vs e^{−U} (max error 0.35 % of max p, ratio ≈ 4 per halving), J vs p f_irr
    (weighted L² error 0.36 %), the grid's f_irr vs the exact field (0.71 %), and the HHD sum
    Σ P 2 f_irrᵀD⁻¹f_irr vs Φ (an independent formula on the same grid)."""
    errs = [np.abs(r.mass - exact_mass(r)).max() / exact_mass(r).max() for r in study.results]
    assert errs[2] < 0.006
    assert 3.3 < errs[1] / errs[2] < 4.7
    r = study.results[-1]
    z = r.points.reshape(-1, 2)
    P = r.mass.reshape(-1)[:, None]
    fi = f_irr_exact(z)
    J_exact = exact_mass(r).reshape(-1)[:, None] / np.prod(r.h) * fi

    def rel(a, b):
        return np.sqrt(np.sum(P * (a - b) ** 2) / np.sum(P * b ** 2))

    assert rel(r.J.reshape(-1, 2), J_exact) < 0.01
    assert rel(r.f_irr.reshape(-1, 2), fi) < 0.015
    assert r.epr_hhd == pytest.approx(exact_epr(360), rel=0.02)


def test_reversible_control_has_no_current():
    """w = 0: detailed balance with the same state-dependent, non-diagonal D. The edges' forces
    are then the midpoint values of −v·∇U, so Φ_h vanishes up to round-off or O(h⁴), and the
    density is e^{−U} at O(h²)."""
    errs = []
    for n in (40, 80):
        r = solve_stationary(lambda z: drift(z, 0.0), D_of, BOX, n)
        assert abs(r.epr) < 1e-8 and abs(r.epr_face) < 1e-8
        assert np.abs(r.J).max() < 1e-6 * r.density.max()
        errs.append(np.abs(r.mass - exact_mass(r)).max() / exact_mass(r).max())
    assert errs[1] < 1e-3 and 3.5 < errs[0] / errs[1] < 4.5


def test_constant_non_diagonal_D_as_a_callable_matches_121_over_588():
    """T3 (docs/irreversibility.md §6): B = [[1, 0.5], [−0.3, 2]], D = [[1, 0.2], [0.2, 2]],
    Φ = 121/588 exactly. Through the lattice scheme (no Cholesky map), Richardson from n = 80,
    160."""
    B = np.array([[1.0, 0.5], [-0.3, 2.0]])
    D = np.array([[1.0, 0.2], [0.2, 2.0]])
    study = refine(lambda z: -z @ B.T, lambda z: np.broadcast_to(D, (len(z), 2, 2)),
                   [[-4.0, 4.0], [-5.5, 5.5]], (80, 160))
    assert study.richardson == pytest.approx(121 / 588, rel=2e-3)
    assert study.epr[-1] == pytest.approx(121 / 588, rel=0.01)


def test_constant_diagonal_D_as_a_callable_is_the_axis_scheme():
    """With D12 = 0 the lattice rates reduce to the SG face rates of §3.2 (x = Pe = 2fh/D): the
    same generator, hence the same Φ_h to round-off (ring drift, anisotropic constant D)."""
    D = np.diag([0.6, 1.4])

    def f(z):
        r2 = (z ** 2).sum(axis=1, keepdims=True)
        return -(r2 - 1.0) * z + z @ R.T
    box = [[-2.5, 2.5], [-2.5, 2.5]]
    a = solve_stationary(f, D, box, 60)
    b = solve_stationary(f, lambda z: np.broadcast_to(D, (len(z), 2, 2)), box, 60)
    assert b.epr == pytest.approx(a.epr, rel=1e-7)
    assert np.abs(b.mass - a.mass).max() < 1e-9 * a.mass.max()


def test_torus_with_constant_drift_is_exact():
    """Periodic in both axes, constant f and non-diagonal D: p is uniform, J = f p, and
    Φ = 2 fᵀD⁻¹f exactly on any grid (each lattice direction contributes ½ a_e x_e², and
    Σ_e ½ a_e (v_eᵀF)² = ½ FᵀDF with F = 2D⁻¹f). Wrapped diagonal edges included."""
    f0 = np.array([0.7, -0.4])
    D = np.array([[1.0, -0.3], [-0.3, 0.8]])
    r = solve_stationary(lambda z: np.broadcast_to(f0, z.shape).copy(),
                         lambda z: np.broadcast_to(D, (len(z), 2, 2)),
                         [[0, 2 * np.pi], [0, 2 * np.pi]], 24, periodic=True)
    assert r.epr == pytest.approx(2 * f0 @ np.linalg.solve(D, f0), rel=1e-10)
    assert np.ptp(r.density) < 1e-10 * r.density.max()
    assert np.allclose(r.J, f0 * r.density[..., None], rtol=1e-8)


def test_too_anisotropic_D_is_explained():
    """|D12| > D11 h2/h1 cannot be carried by the 9-point lattice as a valid jump process."""
    D = np.array([[1.0, 0.9], [0.9, 1.0]])
    with pytest.raises(DDMError, match=r"too anisotropic.*h2/h1 in \[0.9, 1.11\]"):
        solve_stationary(lambda z: -z, lambda z: np.broadcast_to(D, (len(z), 2, 2)),
                         [[-3, 3], [-6, 6]], (20, 20))       # h2/h1 = 2: fails
    r = solve_stationary(lambda z: -z, lambda z: np.broadcast_to(D, (len(z), 2, 2)),
                         [[-3, 3], [-6, 6]], (20, 40))        # h2/h1 = 1: fine
    assert abs(r.epr) < 1e-10


@pytest.mark.parametrize("D, match", [
    (lambda z: np.ones((len(z), 2)), r"shape \(\d+, 2, 2\)"),
    (lambda z: np.broadcast_to([[1.0, 0.2], [0.1, 1.0]], (len(z), 2, 2)), "symmetric"),
    (lambda z: np.broadcast_to([[1.0, 1.0], [1.0, 1.0]], (len(z), 2, 2)), "positive definite"),
    (lambda z: np.broadcast_to([[np.nan, 0.0], [0.0, 1.0]], (len(z), 2, 2)), "not finite"),
    (lambda z: 1 / 0, "ZeroDivisionError"),
])
def test_bad_state_dependent_2d_D_is_explained(D, match):
    with pytest.raises(DDMError, match=match):
        solve_stationary(lambda z: -z, D, [[-3, 3], [-3, 3]], 20)
