"""The local learning rule (online.py): the delta rule itself, its convergence under teacher
forcing, the diffusion from residual moments, and what it refuses."""
import numpy as np
import pytest

from ddm_numba import DDMError
from ddm_numba._jit import phi
from ddm_numba.online import _lms, fit_online


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


@pytest.fixture(scope="module")
def learned():
    return fit_online("double_well", 32, seed=0, time_total=40.0, trials=256, progress=None)


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
    res = CliRunner().invoke(main, ["fit", "double_well", "--online", "2", "--online-trials",
                                    "64", "-N", "16", "--out", str(tmp_path / "m.npz"), "-q"])
    assert res.exit_code == 0, res.output
