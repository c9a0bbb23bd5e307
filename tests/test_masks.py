"""Connectivity masks (masks.py) in full-mode fits: W is exactly zero outside the mask, with and
without Dale's law, and bad masks are refused with the reason."""
import numpy as np
import pytest

from ddm_numba import DDMError, fit
from ddm_numba.masks import make_mask


@pytest.fixture(scope="module")
def masked_fit():
    return fit("ou2d", 48, mode="full", seed=1, max_iter=60, mask="random:p=0.5", progress=None,
               self_check_time=0)


def test_masked_weights_are_exactly_zero_and_the_fit_is_good(masked_fit):
    mask, _ = make_mask("random:p=0.5", 48, seed=1)
    W = masked_fit.W
    assert np.all(W[~mask] == 0.0) and np.count_nonzero(W[mask]) > 0.9 * mask.sum()
    info = masked_fit.meta["mask"]
    assert info["source"] == "random:p=0.5" and abs(info["density"] - mask.mean()) < 1e-12
    # half the connections still carry the 2-D OU drift (unmasked, the same fit: e_f ~ 1e-3)
    assert masked_fit.meta["fit"]["e_f"] < 0.05, masked_fit.meta["fit"]


def test_tube_rounds_trade_fit_for_stability(masked_fit):
    """This fit's manifold repels at first; each refit on a wider tube (FullGram.set_tube) is
    the minimum of a convex loss with a larger penalty on the drift's response off the
    manifold, so, taken in the order of their tubes, the rounds' on-manifold losses cannot fall
    (up to ADMM's tolerance) and the transverse growth ends below the first round's. The
    ladder's tubes widen; the refined ones bisect below the first stable tube, and the round
    kept is the narrowest stable one within the loss budget, or the fit says it kept the first."""
    from ddm_numba.matching import TUBE_ERROR_FACTOR, TUBE_ERROR_FLOOR
    rounds = [v for k, v in masked_fit.meta["training"]["stages"].items()
              if k.startswith("full")]
    ladder = [v for k, v in masked_fit.meta["training"]["stages"].items()
              if k.startswith("full") and not k.endswith("(refined)")]
    assert rounds[0]["transverse_growth"] > 0 and len(rounds) >= 2, rounds
    assert [r["tube"] for r in ladder] == sorted({r["tube"] for r in ladder})
    by_tube = sorted(rounds, key=lambda r: r["tube"])
    losses = [r.get("loss_manifold", r["loss"]) for r in by_tube]
    assert all(b >= a * (1 - 1e-5) for a, b in zip(losses, losses[1:])), losses
    assert min(r["transverse_growth"] for r in rounds[1:]) < rounds[0]["transverse_growth"]
    assert all(r["solver"] == "admm" and r["kkt_residual"] < 1e-3 for r in rounds), rounds
    budget = max(TUBE_ERROR_FACTOR * rounds[0]["drift_error"], TUBE_ERROR_FLOOR)
    kept = [r for r in rounds if "kept" in r]
    assert len(kept) == 1, rounds
    if kept[0]["kept"].startswith("the narrowest"):
        good = [r for r in rounds if r["transverse_growth"] < 0 and r["drift_error"] <= budget]
        assert kept[0] is min(good, key=lambda r: r["tube"]), rounds
    else:          # no round stable within the error budget: the fit says it kept the first
        assert kept[0]["kept"].startswith("the first round"), kept
        assert all(r["transverse_growth"] >= 0 or r["drift_error"] > budget for r in rounds)


def test_mask_and_dale_together(tmp_path):
    mask = make_mask("distance:p=0.3", 40, seed=0)[0]
    np.savez(tmp_path / "m.npz", mask=mask)
    net = fit("ou2d", 40, mode="full", seed=0, max_iter=30, mask=str(tmp_path / "m.npz"),
              dale=0.8, progress=None, self_check_time=0)
    W = net.W
    assert np.all(W[~mask] == 0.0)
    assert np.all(W[:, :32] >= 0) and np.all(W[:, 32:] <= 0)     # 80 % excitatory columns
    assert net.meta["mask"]["source"].endswith("m.npz")


def test_generators_have_the_density_asked_for():
    """Density within 4 binomial standard deviations of p (N² = 40000 entries)."""
    for kind in ("random", "distance"):
        for p in (0.1, 0.5):
            mask, info = make_mask(f"{kind}:p={p}", 200, seed=3)
            sd = np.sqrt(p * (1 - p) / mask.size) if kind == "random" else 0.02
            assert abs(info["density"] - p) < 4 * sd + (0.01 if kind == "distance" else 0), \
                (kind, p, info["density"])
    a, _ = make_mask("random:p=0.2", 30, seed=1)
    b, _ = make_mask("random:p=0.2", 30, seed=1)
    assert np.array_equal(a, b) and not np.array_equal(a, make_mask("random:p=0.2", 30, 2)[0])


def test_bad_masks(tmp_path):
    np.savez(tmp_path / "int.npz", mask=np.ones((8, 8), dtype=int))
    np.savez(tmp_path / "shape.npz", mask=np.ones((8, 9), dtype=bool))
    np.savez(tmp_path / "nokey.npz", other=np.ones((8, 8), dtype=bool))
    for spec, msg in [(str(tmp_path / "int.npz"), "boolean"), (str(tmp_path / "shape.npz"), "8×8"),
                      (str(tmp_path / "nokey.npz"), "key 'mask'"), ("random:p=0", "density"),
                      ("random:q=0.1", "p=DENSITY"), (np.zeros((8, 8), bool), "no connection"),
                      (str(tmp_path / "missing.npz"), "does not exist")]:
        with pytest.raises(DDMError, match=msg):
            make_mask(spec, 8)
    with pytest.raises(DDMError, match="full connectivity"):
        fit("ou2d", 16, mask="random:p=0.5", progress=None)


def test_mask_cli(tmp_path):
    from click.testing import CliRunner
    from ddm_numba_cli.main import main
    runner = CliRunner()
    res = runner.invoke(main, ["fit", "ou2d", "--out", str(tmp_path / "m.npz"), "--mask",
                               "random:p=0.5"])
    assert res.exit_code == 2 and "--mode full" in res.output
    res = runner.invoke(main, ["fit", "ou2d", "-N", "24", "--mode", "full", "--max-iter", "5",
                               "--check-time", "0", "--mask", "random:p=0.5", "--out",
                               str(tmp_path / "m.npz"), "-q"])
    assert res.exit_code == 0, res.output


def test_low_rank_dale_keeps_every_column_sign():
    """W = M A with M ≥ 0 and signed decoder columns (matching.dale_lowrank_bounds): every
    column of the N×N W keeps its neuron's sign, and the drift is still learned."""
    net = fit("double_well", 40, dale=0.75, seed=0, max_iter=150, progress=None,
              self_check_time=0)
    assert net.mode == "lowrank" and net.meta["training"]["method"] == "joint"
    W = net.M @ net.A
    assert np.all(net.M >= 0)
    assert np.all(W[:, :30] >= 0) and np.all(W[:, 30:] <= 0) and np.any(W[:, 30:] < 0)
    assert net.meta["dale"]["n_excitatory"] == 30
    assert net.meta["fit"]["e_f"] < 0.05, net.meta["fit"]


def test_low_rank_gradient_at_a_dale_point_is_the_plain_one():
    """The bounds change where L-BFGS-B may go, not the loss: its gradient at a feasible point
    (M ≥ 0, signed A) equals finite differences, like anywhere else."""
    from ddm_numba.matching import DriftData, dale_lowrank_bounds, lowrank_loss_grad, \
        lowrank_packer
    rng = np.random.default_rng(4)
    K, N, d = 200, 12, 2
    z = rng.uniform(-2, 2, (K, d))
    f = np.stack([z[:, 0] - z[:, 0] ** 3, -z[:, 1] + np.sin(z[:, 0])], 1)
    data = DriftData(z, np.zeros((K, 0)), f, 1.0 / f.var(0), tau=1.0)
    packer = lowrank_packer(N, d, 0)
    sign = np.where(np.arange(N) < 8, 1.0, -1.0)
    A = np.abs(rng.standard_normal((d, N))) * sign
    x = packer.pack({"A": A, "b_z": rng.standard_normal(d),
                     "M": np.abs(rng.standard_normal((N, d))), "c": rng.standard_normal(N)})
    lo, hi = dale_lowrank_bounds(packer, sign)
    assert np.all(lo <= x) and np.all(x <= hi)
    _, grad = lowrank_loss_grad(x, packer, data, reg_A=0.01)
    h = 1e-6
    fd = np.array([(lowrank_loss_grad(x + h * e, packer, data, 0.01)[0]
                    - lowrank_loss_grad(x - h * e, packer, data, 0.01)[0]) / (2 * h)
                   for e in np.eye(x.size)])
    assert np.linalg.norm(grad - fd) < 1e-6 * np.linalg.norm(fd)


def test_transverse_growth_sees_an_unstable_direction_off_the_manifold():
    """transverse_growth: −1 for a low-rank W = M A (nothing acts off the manifold); with
    3 u uᵀ added for a unit u ⊥ range(M), the perturbation along u grows at 3 φ'(x)·(u²
    weighted) − 1 > 0 — here at z = 0 with c = 0, where φ' = 1: exactly +2."""
    from ddm_numba.matching import transverse_growth
    rng = np.random.default_rng(1)
    N, d = 20, 2
    M = rng.standard_normal((N, d))
    A = rng.standard_normal((d, N))
    c = np.zeros(N)
    assert abs(transverse_growth(M @ A, M, c, np.zeros((1, d))) + 1.0) < 1e-12
    u = rng.standard_normal(N)
    u -= M @ np.linalg.lstsq(M, u, rcond=None)[0]
    u /= np.linalg.norm(u)
    W = M @ A + 3.0 * np.outer(u, u)
    assert abs(transverse_growth(W, M, c, np.zeros((1, d))) - 2.0) < 1e-9
    assert transverse_growth(W, M, c, np.ones((1, d))) < 2.0     # φ' < 1 away from 0
