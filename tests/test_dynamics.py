"""Fixed points, stability and Lyapunov exponents of deterministic flows (analysis/dynamics.py).

Reference values are computed independently of the module: characteristic polynomials solved by
numpy.roots, closed-form eigenvalues, and the literature Lorenz exponent λ₁ = 0.9056.
"""
import numpy as np
import pytest

from ddm_numba.analysis.dynamics import (FixedPoint, check_jacobian, classify_eigenvalues,
                                         find_fixed_points, integrate_flow, jacobian_eigenvalues,
                                         largest_lyapunov, pair_fixed_points)
from ddm_numba.errors import DDMError

SIGMA, RHO, BETA = 10.0, 28.0, 8.0 / 3.0
LORENZ_BOX = [[-25.0, 25.0], [-30.0, 30.0], [0.0, 55.0]]
LORENZ_LAMBDA1 = 0.9056   # e.g. Sprott, "Chaos and Time-Series Analysis" (2003), table A.1


def lorenz_f(z):
    x, y, w = z.T
    return np.stack([SIGMA * (y - x), x * (RHO - w) - y, x * y - BETA * w], axis=1)


def lorenz_jac(z):
    x, y, w = z.T
    J = np.zeros((z.shape[0], 3, 3))
    J[:, 0, 0], J[:, 0, 1] = -SIGMA, SIGMA
    J[:, 1, 0], J[:, 1, 1], J[:, 1, 2] = RHO - w, -1.0, -x
    J[:, 2, 0], J[:, 2, 1], J[:, 2, 2] = y, x, -BETA
    return J


def linear(A):
    A = np.asarray(A, float)
    return (lambda z: z @ A.T), (lambda z: np.broadcast_to(A, (z.shape[0],) + A.shape))


def stuart_landau(mu=1.0, omega=1.0):
    def f(z):
        x, y = z.T
        r2 = x * x + y * y
        return np.stack([(mu - r2) * x - omega * y, (mu - r2) * y + omega * x], axis=1)

    def jac(z):
        x, y = z.T
        r2 = x * x + y * y
        J = np.empty((z.shape[0], 2, 2))
        J[:, 0, 0], J[:, 0, 1] = mu - r2 - 2 * x * x, -2 * x * y - omega
        J[:, 1, 0], J[:, 1, 1] = -2 * x * y + omega, mu - r2 - 2 * y * y
        return J
    return f, jac


def double_well_f(z):
    return z - z ** 3


def double_well_jac(z):
    return (1.0 - 3.0 * z ** 2)[:, :, None]


def sort_eigs(lam):
    lam = np.asarray(lam, complex)
    return lam[np.lexsort((-lam.imag, -lam.real))]


@pytest.fixture(scope="module")
def lorenz_points():
    return find_fixed_points(lorenz_f, lorenz_jac, LORENZ_BOX, starts=128, seed=0)


# -- fixed points -------------------------------------------------------------------------------

def test_lorenz_has_exactly_three_fixed_points(lorenz_points):
    c = np.sqrt(BETA * (RHO - 1.0))
    expected = np.array([[-c, -c, RHO - 1.0], [0.0, 0.0, 0.0], [c, c, RHO - 1.0]])
    assert len(lorenz_points) == 3
    # sorted by coordinates: the negative wing, the origin, the positive wing
    np.testing.assert_allclose([p.z for p in lorenz_points], expected, atol=1e-10)
    assert all(p.residual < 1e-8 for p in lorenz_points)


def test_lorenz_eigenvalues_match_characteristic_polynomials(lorenz_points):
    wing = np.roots([1.0, SIGMA + BETA + 1.0, BETA * (SIGMA + RHO), 2 * BETA * SIGMA * (RHO - 1)])
    origin = np.concatenate([[-BETA], np.roots([1.0, SIGMA + 1.0, SIGMA * (1.0 - RHO)])])
    left, zero, right = lorenz_points
    np.testing.assert_allclose(zero.eigenvalues, sort_eigs(origin), rtol=0, atol=1e-8)
    for p in (left, right):
        np.testing.assert_allclose(p.eigenvalues, sort_eigs(wing), rtol=0, atol=1e-8)
        # saddle foci: an unstable complex pair (Re ≈ +0.094) and one stable real direction
        assert p.eigenvalues[0].real == pytest.approx(0.0940, abs=1e-4)
        assert p.kind == "saddle" and p.label == "saddle-focus"
        assert (p.n_unstable, p.n_stable, p.n_center) == (2, 1, 0)
    assert zero.kind == "saddle" and zero.label == "saddle"
    assert (zero.n_unstable, zero.n_stable) == (1, 2)
    assert zero.leading_sign == 1


def test_fixed_points_do_not_depend_on_seed_or_starts(lorenz_points):
    other = find_fixed_points(lorenz_f, lorenz_jac, LORENZ_BOX, starts=64, seed=7)
    np.testing.assert_allclose([p.z for p in other], [p.z for p in lorenz_points], atol=1e-10)
    # explicit starts near one wing find only that wing
    near = find_fixed_points(lorenz_f, lorenz_jac, LORENZ_BOX, starts=[[8.0, 9.0, 26.0],
                                                                       [9.0, 8.0, 28.0]])
    assert len(near) == 1
    np.testing.assert_allclose(near[0].z, lorenz_points[2].z, atol=1e-10)


def test_points_outside_the_enlarged_box_are_dropped():
    # roots at ±1 and ±3; the box [−1.5, 1.5] enlarged by 50% reaches ±2.25
    f = lambda z: (z ** 2 - 1.0) * (z ** 2 - 9.0)                        # noqa: E731
    jac = lambda z: (4 * z ** 3 - 20 * z)[:, :, None]                      # noqa: E731
    starts = np.linspace(-4.0, 4.0, 41)[:, None]
    found = find_fixed_points(f, jac, [[-1.5, 1.5]], starts=starts)
    np.testing.assert_allclose([p.z[0] for p in found], [-1.0, 1.0], atol=1e-12)
    wide = find_fixed_points(f, jac, [[-4.0, 4.0]], starts=starts)
    np.testing.assert_allclose([p.z[0] for p in wide], [-3.0, -1.0, 1.0, 3.0], atol=1e-12)


def test_double_well():
    points = find_fixed_points(double_well_f, double_well_jac, [[-2.0, 2.0]], starts=64)
    np.testing.assert_allclose([p.z[0] for p in points], [-1.0, 0.0, 1.0], atol=1e-12)
    np.testing.assert_allclose([p.eigenvalues[0] for p in points], [-2.0, 1.0, -2.0], atol=1e-12)
    assert [p.label for p in points] == ["stable node", "unstable node", "stable node"]


@pytest.mark.parametrize("A, kind, label", [
    ([[-0.5, 2.0], [-2.0, -0.5]], "stable", "stable focus"),
    ([[-1.0, 0.0], [0.0, -3.0]], "stable", "stable node"),
    ([[1.0, 0.0], [0.0, -2.0]], "saddle", "saddle"),
    ([[0.3, 1.0], [-1.0, 0.3]], "unstable", "unstable focus"),
    ([[0.0, 1.0], [-1.0, 0.0]], "non-hyperbolic", "non-hyperbolic"),
])
def test_linear_flows_are_classified(A, kind, label):
    f, jac = linear(A)
    points = find_fixed_points(f, jac, [[-1.0, 2.0], [-1.0, 1.0]], starts=16)
    assert len(points) == 1
    p = points[0]
    np.testing.assert_allclose(p.z, [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(p.eigenvalues, sort_eigs(np.linalg.eigvals(A)), atol=1e-12)
    assert (p.kind, p.label) == (kind, label)


def test_stuart_landau_has_one_unstable_fixed_point():
    f, jac = stuart_landau()
    points = find_fixed_points(f, jac, [[-2.0, 2.0], [-2.0, 2.0]], starts=128)
    assert len(points) == 1
    np.testing.assert_allclose(points[0].z, [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(points[0].eigenvalues, [1 + 1j, 1 - 1j], atol=1e-12)
    assert points[0].label == "unstable focus"


def test_degenerate_root_is_found_once():
    # f = −z³: Newton converges only linearly, from both sides; the copies must merge
    points = find_fixed_points(lambda z: -z ** 3, lambda z: (-3 * z ** 2)[:, :, None],
                               [[-1.0, 1.0]], starts=32)
    assert len(points) == 1
    assert abs(points[0].z[0]) < 1e-2
    assert points[0].kind == "non-hyperbolic"


def test_classify_eigenvalues_tolerance_is_relative():
    assert classify_eigenvalues([1e-9, -3.0])[0] == "non-hyperbolic"
    assert classify_eigenvalues([1e-3, -3.0])[0] == "saddle"
    assert classify_eigenvalues([-1e-9])[0] == "stable"          # slow but hyperbolic
    assert classify_eigenvalues([0.0, 0.0])[0] == "non-hyperbolic"
    # with a system rate, a lone tiny eigenvalue counts as zero
    assert classify_eigenvalues([-1e-9], rate=1.0)[0] == "non-hyperbolic"
    assert classify_eigenvalues([-1e-3], rate=1.0)[:2] == ("stable", "stable node")


def test_jacobian_helpers():
    z = np.array([[1.0, -2.0, 20.0], [-5.0, 3.0, 30.0]])
    lam = jacobian_eigenvalues(lorenz_jac, z)
    for k in range(2):
        np.testing.assert_allclose(lam[k], sort_eigs(np.linalg.eigvals(lorenz_jac(z)[k:k + 1])[0]))
    assert check_jacobian(lorenz_f, lorenz_jac, z) < 1e-7
    wrong = lambda x: lorenz_jac(x).transpose(0, 2, 1)                    # noqa: E731
    assert check_jacobian(lorenz_f, wrong, z) > 0.1


# -- pairing -----------------------------------------------------------------------------------

def perturbed(point, dz, scale=1.0):
    """A copy of a fixed point moved by dz with eigenvalues scaled (still the same kind)."""
    lam = point.eigenvalues * scale
    kind, label, nu, ns, nc = classify_eigenvalues(lam)
    return FixedPoint(z=point.z + dz, eigenvalues=lam, residual=0.0, error=0.0, kind=kind,
                      label=label, n_unstable=nu, n_stable=ns, n_center=nc)


def test_pairing_perturbed_lorenz_points(lorenz_points):
    rng = np.random.default_rng(1)
    copies = [perturbed(p, 0.05 * rng.standard_normal(3), 1.01) for p in lorenz_points]
    extra = perturbed(lorenz_points[1], np.array([0.0, 0.0, 40.0]))
    other = [copies[2], extra, copies[0], copies[1]]          # shuffled, with an extra point
    pairing = pair_fixed_points(lorenz_points, other)
    assert [(p.reference_index, p.other_index) for p in pairing.pairs] == [(0, 2), (1, 3), (2, 0)]
    assert pairing.unmatched_reference == [] and pairing.unmatched_other == [1]
    assert not pairing.all_agree                               # the extra point has no partner
    for pair in pairing.pairs:
        assert pair.distance < 0.5
        assert pair.kind_agrees and pair.sign_agrees and pair.index_agrees
        # eigenvalues scaled by 1.01: each λ is paired with its own 1.01 λ (conjugates too)
        np.testing.assert_allclose(pair.eigenvalue_pairs[:, 1], 1.01 * pair.eigenvalue_pairs[:, 0])
        expected = 0.01 * np.abs(pair.reference.eigenvalues).max()
        assert pair.max_eigenvalue_diff == pytest.approx(expected, rel=1e-9)
    assert pairing.to_dict()["unmatched_other"] == [1]


def test_pairing_reports_kind_mismatch_and_distance_cut(lorenz_points):
    flipped = perturbed(lorenz_points[1], np.zeros(3), -1.0)   # origin: saddle stays saddle
    stable = perturbed(lorenz_points[2], np.zeros(3), 1.0)
    stable = FixedPoint(z=stable.z, eigenvalues=np.array([-0.1 + 10j, -0.1 - 10j, -13.0]),
                        residual=0.0, error=0.0, kind="stable", label="stable focus",
                        n_unstable=0, n_stable=3, n_center=0)
    pairing = pair_fixed_points(lorenz_points[1:], [flipped, stable])
    origin, wing = pairing.pairs
    assert origin.kind_agrees and not origin.index_agrees     # 1 vs 2 unstable directions
    assert not wing.kind_agrees and not wing.sign_agrees
    assert wing.max_eigenvalue_diff == pytest.approx(abs(13.0 - 13.854577914596), abs=0.2)
    # a distance cut dissolves far pairs
    far = perturbed(lorenz_points[0], np.array([5.0, 0.0, 0.0]))
    cut = pair_fixed_points(lorenz_points[:1], [far], max_distance=1.0)
    assert cut.pairs == [] and cut.unmatched_reference == [0] and cut.unmatched_other == [0]


# -- Lyapunov exponents ------------------------------------------------------------------------

def test_lorenz_largest_lyapunov_exponent():
    # independent starts (points of one trajectory would retrace the same orbit), K = 128,
    # dt = 0.01, time = 100: measured 0.9035 ± 0.0028 (1.6 s); the 2% band covers the
    # stderr several times over plus the finite-time bias (< 1% at time 100)
    z0 = np.random.default_rng(0).uniform([-15, -20, 5], [15, 20, 40], (128, 3))
    res = largest_lyapunov(lorenz_f, lorenz_jac, z0, dt=0.01, time=100.0, transient=10.0)
    assert res.per_run.shape == (128,)
    assert res.stderr < 0.005
    assert abs(res.mean - LORENZ_LAMBDA1) < 0.02 * LORENZ_LAMBDA1
    assert abs(res.mean - LORENZ_LAMBDA1) < 4 * res.stderr + 0.01


def test_stuart_landau_limit_cycle_has_zero_exponent():
    f, jac = stuart_landau()
    z0 = np.random.default_rng(1).uniform(-2, 2, (16, 2))
    res = largest_lyapunov(f, jac, z0, dt=0.01, time=20.0, transient=5.0)
    assert abs(res.mean) < 1e-3 and np.abs(res.per_run).max() < 1e-3
    # the trajectories end on the unit circle
    np.testing.assert_allclose(np.linalg.norm(res.z_end, axis=1), 1.0, atol=1e-6)


def test_linear_flow_exponent_is_the_leading_eigenvalue():
    f, jac = linear([[-0.5, 0.0], [0.0, -2.0]])
    res = largest_lyapunov(f, jac, np.ones((4, 2)), dt=0.01, time=20.0, transient=2.0)
    assert res.mean == pytest.approx(-0.5, abs=1e-3)
    single = largest_lyapunov(f, jac, [1.0, 1.0], dt=0.01, time=5.0, transient=0.0)
    assert single.per_run.shape == (1,) and np.isnan(single.stderr)


def test_integrate_flow_matches_exact_solution():
    f, _ = linear([[-1.0, 0.0], [0.0, 0.5]])
    traj = integrate_flow(f, [[1.0, 1.0]], dt=0.01, n_steps=100, every=10)
    assert traj.shape == (11, 1, 2)
    np.testing.assert_allclose(traj[-1, 0], [np.exp(-1.0), np.exp(0.5)], rtol=1e-9)


# -- bad input --------------------------------------------------------------------------------

def test_bad_box_shapes():
    for box in ([-1.0, 1.0], [[-1.0, 1.0, 2.0]], [[[-1.0, 1.0]]]):
        with pytest.raises(DDMError, match=r"shape \(d, 2\)"):
            find_fixed_points(double_well_f, double_well_jac, box)
    with pytest.raises(DDMError, match="low < high"):
        find_fixed_points(double_well_f, double_well_jac, [[1.0, -1.0]])
    with pytest.raises(DDMError, match="non-finite"):
        find_fixed_points(double_well_f, double_well_jac, [[-1.0, np.inf]])


def test_wrong_output_shapes():
    with pytest.raises(DDMError, match=r"jac must return .*\(K, d, d\).*returned shape \(256, 1\)"):
        find_fixed_points(double_well_f, lambda z: 1 - 3 * z ** 2, [[-2.0, 2.0]])
    with pytest.raises(DDMError, match=r"f must return .*returned shape \(256,\)"):
        find_fixed_points(lambda z: (z - z ** 3)[:, 0], double_well_jac, [[-2.0, 2.0]])
    with pytest.raises(DDMError, match="jac must return"):
        largest_lyapunov(lorenz_f, lambda z: lorenz_jac(z)[:, :2], np.ones((2, 3)), 0.01, 1.0, 0.0)
    with pytest.raises(DDMError, match=r"starts must have shape \(K, 3\)"):
        find_fixed_points(lorenz_f, lorenz_jac, LORENZ_BOX, starts=np.ones((4, 2)))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")      # the bad f's own overflow / log(<0)
def test_non_finite_values():
    with pytest.raises(DDMError, match="non-finite values .* inside the box"):
        find_fixed_points(lambda z: np.log(z), lambda z: (1 / z)[:, :, None], [[-1.0, 1.0]])
    with pytest.raises(DDMError, match="z0 contains non-finite"):
        largest_lyapunov(lorenz_f, lorenz_jac, [[np.nan, 0.0, 0.0]], 0.01, 1.0, 0.0)
    blow_up = lambda z: z ** 3                                              # noqa: E731
    with pytest.raises(DDMError, match="became non-finite"):
        largest_lyapunov(blow_up, lambda z: (3 * z ** 2)[:, :, None], [[2.0]], 0.01, 10.0, 0.0)
    for kwargs in ({"dt": 0.0}, {"dt": np.nan}, {"time": -1.0}, {"dt": 2.0, "time": 1.0}):
        args = {"dt": 0.01, "time": 1.0, "transient": 0.0, **kwargs}
        with pytest.raises(DDMError):
            largest_lyapunov(lorenz_f, lorenz_jac, np.ones((1, 3)), **args)


def test_zero_field_and_bad_starts():
    with pytest.raises(DDMError, match="f is zero everywhere"):
        find_fixed_points(lambda z: 0 * z, lambda z: np.zeros(z.shape + z.shape[1:]), [[-1, 1]])
    with pytest.raises(DDMError, match="positive integer"):
        find_fixed_points(double_well_f, double_well_jac, [[-2.0, 2.0]], starts=0)
    with pytest.raises(DDMError, match="different dimensions"):
        one = find_fixed_points(double_well_f, double_well_jac, [[-2.0, 2.0]], starts=8)
        pair_fixed_points(one, find_fixed_points(*stuart_landau(), [[-2, 2], [-2, 2]], starts=8))
