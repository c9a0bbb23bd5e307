"""The local learning rule (online.py): the delta rule itself, its convergence under teacher
forcing, the diffusion from residual moments, and what it refuses."""
import numpy as np
import pytest

from ddm_numba import DDMError, fit
from ddm_numba._jit import phi
from ddm_numba.online import _lms, _rls, fit_online


def test_the_rule_finds_decoders_that_exist():
    """Targets made by known decoders (y = A* φ(M z + c) + b*): from zero, the normalized delta
    rule drives the read-out A φ + b to the targets — on fresh states too — so the rule and its
    fixed point are what the docstring says. (The decoders themselves approach A* slowly along
    the directions in which the tanh features are nearly collinear: after 30 passes the output
    error is 1e-4 of the targets' scale while A is still 0.3 off — the conditioning that makes
    online learning slow, measured here.)"""
    rng = np.random.default_rng(0)
    N, d, n = 6, 2, 20000
    M, c = rng.standard_normal((N, d)), rng.standard_normal(N)
    A_true, b_true = rng.standard_normal((d, N)), rng.standard_normal(d)
    z = rng.uniform(-1.5, 1.5, (n, d))
    y = np.tanh(z @ M.T + c) @ A_true.T + b_true
    A, b = np.zeros((d, N)), np.zeros(d)
    first = _lms(z, y, M, c, A, b, 1.0, np.empty(N))
    for _ in range(30):
        last = _lms(z, y, M, c, A, b, 1.0, np.empty(N))
    assert last < 1e-3 * first
    z_new = rng.uniform(-1.5, 1.5, (2000, d))
    y_new = np.tanh(z_new @ M.T + c) @ A_true.T + b_true
    pred = np.tanh(z_new @ M.T + c) @ A.T + b
    assert np.max(np.abs(pred - y_new)) < 2e-3 * np.max(np.abs(y_new))
    assert abs(phi(0.3) - np.tanh(0.3)) < 1e-15


def test_rls_is_the_ridge_solution_after_one_pass():
    """Sherman–Morrison in Potter's square-root form, state by state, ends at the closed form:
    after n states W equals argmin Σ |y − W u|² + α‖W‖², u = [φ(Mz + c); 1], solved by numpy;
    and S Sᵀ equals (UᵀU + αI)⁻¹. Two chunks change nothing."""
    rng = np.random.default_rng(1)
    N, d, n, alpha = 12, 2, 3000, 0.5
    M, c = rng.standard_normal((N, d)), rng.standard_normal(N)
    z = rng.uniform(-2, 2, (n, d))
    y = np.sin(z) + 0.1 * z[:, ::-1] ** 3
    W, S = np.zeros((d, N + 1)), np.eye(N + 1) / np.sqrt(alpha)
    buf = np.empty(3 * (N + 1))
    _rls(z[:1000], y[:1000], M, c, W, S, buf)
    _rls(z[1000:], y[1000:], M, c, W, S, buf)
    U = np.hstack([np.tanh(z @ M.T + c), np.ones((n, 1))])
    G = U.T @ U + alpha * np.eye(N + 1)
    W_ref = np.linalg.solve(G, U.T @ y).T
    # the recursion's rounding grows with the condition number of G (here 2.9e4): asserted to
    # 1e-10 relative, measured 1e-12 or less
    assert np.max(np.abs(W - W_ref)) < 1e-10 * np.max(np.abs(W_ref))
    P_ref = np.linalg.inv(G)
    assert np.max(np.abs(S @ S.T - P_ref)) < 1e-10 * np.max(np.abs(P_ref))


@pytest.mark.slow
def test_rls_keeps_p_positive_definite_on_a_long_teacher_run():
    """What the square-root form is for: α = 1e-8 (P₀ = 10⁸ I) and 10⁶ teacher states of
    double_well (512 paths × 20 time units from visited states, as fit_online runs them), whose
    tanh features are nearly collinear. The plain update of P lost its positive definiteness
    to rounding here (measured: 34 697 states with uᵀPu < 0, and on the last 5000 states uᵀPu
    off the closed form's by up to 4.3× relative, with negative values); with P = S Sᵀ the
    quadratic forms stay within 3.3 % of uᵀ(UᵀU + αI)⁻¹u (asserted 10 %), and the decoders'
    residual within 20 % of the closed form's (measured 15 %: the recursion's rounding in the
    weakest directions)."""
    from ddm_numba.matching import initial_embedding, training_measure
    from ddm_numba.systems import evaluate, get_system
    system = get_system("double_well")
    rng = np.random.default_rng(0)
    N, trials, alpha = 64, 512, 1e-8
    M, c = initial_embedding(system.domain, N, rng)
    measure = training_measure(system, trials, 2048, 0.7, 16, rng, lambda msg: None)
    z_vis = measure["z"][len(measure["z"]) - measure["n_visited"]:]
    z = z_vis[rng.integers(len(z_vis), size=trials)].copy()
    n = int(round(20.0 / system.dt))
    Z, Y = np.empty((n, trials, 1)), np.empty((n, trials, 1))
    for k in range(n):
        f, g = evaluate(system, z)
        Z[k], Y[k] = z, f + z
        z = z + f * system.dt + np.sqrt(system.dt) * np.einsum(
            "kam,km->ka", g, rng.standard_normal((trials, system.m)))
    Z, Y = Z.reshape(-1, 1), Y.reshape(-1, 1)
    L = N + 1
    W, S = np.zeros((1, L)), np.eye(L) / np.sqrt(alpha)
    _rls(Z, Y, M, c, W, S, np.empty(3 * L))
    U = np.hstack([np.tanh(Z @ M.T + c), np.ones((len(Z), 1))])
    G = U.T @ U + alpha * np.eye(L)
    last = U[-5000:]
    q_ref = np.einsum("ki,ij,kj->k", last, np.linalg.inv(G), last)
    q = np.sum((last @ S) ** 2, axis=1)
    assert q_ref.min() > 0 and np.max(np.abs(q - q_ref) / q_ref) < 0.1
    W_ref = np.linalg.solve(G, U.T @ Y).T
    r, r_ref = Y - U @ W.T, Y - U @ W_ref.T
    assert np.sqrt(np.mean(r ** 2)) < 1.2 * np.sqrt(np.mean(r_ref ** 2))


@pytest.fixture(scope="module")
def learned():
    return fit_online("double_well", 32, seed=0, time_total=40.0, trials=256, rule="delta",
                      progress=None)


@pytest.mark.parametrize("system", ["double_well", "ou2d"])
def test_rls_reaches_the_batch_fit_of_its_embedding(system):
    """The issue's measure: online e_f within 2× of the batch fit's. RLS under teacher forcing
    (64 paths × 40 time units) against the batch fit of the same kind of fixed random embedding
    (`fit(fixed_embedding=True)`: ridge decoders over the training measure). Measured at N = 32
    (teachers from visited states, P in square-root form): double_well 1.3e-5 against 1.9e-4,
    ou2d 4.9e-4 against 5.3e-4. On double_well the online decoders are within 2× of the full
    batch fit too (learned embedding: 1.0e-5); on ou2d at 32 neurons they are not (1.1e-5: a
    linear drift, which a learned embedding represents with low gains)."""
    net = fit_online(system, 32, seed=0, time_total=40.0, trials=64, progress=None)
    fixed = fit(system, 32, seed=0, fixed_embedding=True, progress=None, self_check_time=0)
    assert net.meta["online"]["rule"] == "rls" and net.meta["online"]["starts"] == "visited states"
    assert net.meta["fit"]["e_f"] <= 2 * fixed.meta["fit"]["e_f"]
    if system == "double_well":
        batch = fit(system, 32, seed=0, progress=None, self_check_time=0)
        assert net.meta["fit"]["e_f"] <= 2 * batch.meta["fit"]["e_f"]


def test_online_learning_converges_and_finds_the_diffusion(learned):
    curve = learned.meta["online"]["curve"]
    e_f = np.array(curve["e_f"])
    assert len(e_f) >= 10 and e_f[-1] < 0.5 * e_f[0] and e_f[-1] < 0.05, e_f
    assert np.all(np.diff(curve["time"]) > 0) and curve["time"][-1] == pytest.approx(40.0)
    # D̂ from 256 × 4000 residuals: relative standard error √(2/10⁶) ≈ 1.4e-3; e_D within 5 of it
    D_hat = learned.meta["online"]["D_hat"][0][0]
    assert abs(D_hat - 0.7 ** 2) < 5 * np.sqrt(2 / (256 * 4000)) * 0.49
    assert learned.meta["fit"]["e_D"] < 0.01
    assert learned.meta["training"]["method"] == "online"


def test_online_refusals(tmp_path):
    with pytest.raises(DDMError, match="without inputs"):
        fit_online("multiwell", 16, time_total=1.0, progress=None)
    with pytest.raises(DDMError, match="constant diffusion"):
        fit_online("multiplicative", 16, time_total=1.0, progress=None)
    from click.testing import CliRunner
    from ddm_numba_cli.main import main
    res = CliRunner().invoke(main, ["fit", "double_well", "--online", "5", "--mode", "full",
                                    "--out", str(tmp_path / "m.npz")])
    assert res.exit_code == 2 and "--online" in res.output
    res = CliRunner().invoke(main, ["fit", "double_well", "--online-rule", "delta",
                                    "--out", str(tmp_path / "m.npz")])
    assert res.exit_code == 2 and "--online TIME" in res.output
    with pytest.raises(DDMError, match="unknown online rule"):
        fit_online("double_well", 16, time_total=1.0, rule="hebb", progress=None)
    res = CliRunner().invoke(main, ["fit", "double_well", "--online", "2", "--online-trials",
                                    "32", "-N", "16", "--out", str(tmp_path / "m.npz"), "-q"])
    assert res.exit_code == 0, res.output
    from ddm_numba import Network
    assert Network.load(str(tmp_path / "m.npz")).meta["online"]["rule"] == "rls"
