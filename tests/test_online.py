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
    """Sherman–Morrison, state by state, ends at the closed form: after n states W equals
    argmin Σ |y − W u|² + α‖W‖², u = [φ(Mz + c); 1], solved by numpy; and P equals
    (UᵀU + αI)⁻¹. Two chunks (the caller's re-symmetrization between them) change nothing."""
    rng = np.random.default_rng(1)
    N, d, n, alpha = 12, 2, 3000, 0.5
    M, c = rng.standard_normal((N, d)), rng.standard_normal(N)
    z = rng.uniform(-2, 2, (n, d))
    y = np.sin(z) + 0.1 * z[:, ::-1] ** 3
    W, P = np.zeros((d, N + 1)), np.eye(N + 1) / alpha
    pu = np.empty(2 * (N + 1))
    _rls(z[:1000], y[:1000], M, c, W, P, pu)
    P = 0.5 * (P + P.T)
    _rls(z[1000:], y[1000:], M, c, W, P, pu)
    U = np.hstack([np.tanh(z @ M.T + c), np.ones((n, 1))])
    G = U.T @ U + alpha * np.eye(N + 1)
    W_ref = np.linalg.solve(G, U.T @ y).T
    # the recursion's rounding grows with the condition number of G (here 2.9e4): measured
    # 1e-12 relative for W and P, asserted to 1e-10
    assert np.max(np.abs(W - W_ref)) < 1e-10 * np.max(np.abs(W_ref))
    assert np.max(np.abs(P - np.linalg.inv(G))) < 1e-10 * np.max(np.abs(np.linalg.inv(G)))


@pytest.fixture(scope="module")
def learned():
    return fit_online("double_well", 32, seed=0, time_total=40.0, trials=256, rule="delta",
                      progress=None)


@pytest.mark.parametrize("system", ["double_well", "ou2d"])
def test_rls_reaches_the_batch_fit_of_its_embedding(system):
    """The issue's measure: online e_f within 2× of the batch fit's. RLS under teacher forcing
    (64 paths × 40 time units) against the batch fit of the same kind of fixed random embedding
    (`fit(fixed_embedding=True)`: ridge decoders over the training measure). Measured at N = 32:
    double_well 1.3e-5 against 1.9e-4, ou2d 7.0e-4 against 5.3e-4. On double_well the online
    decoders are within 2× of the full batch fit too (learned embedding: 1.0e-5); on ou2d they
    are not (1.1e-5: a linear drift, which a learned embedding represents with low gains)."""
    net = fit_online(system, 32, seed=0, time_total=40.0, trials=64, progress=None)
    fixed = fit(system, 32, seed=0, fixed_embedding=True, progress=None, self_check_time=0)
    assert net.meta["online"]["skipped"] == 0 and net.meta["online"]["rule"] == "rls"
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
