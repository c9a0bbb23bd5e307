"""stats.Stats: streaming, mergeable sums of an ensemble, checked against the same statistics
computed directly from the paths (numpy), and shards against one run."""
import json

import numpy as np
import pytest

from ddm_numba import DDMError, sample_network
from ddm_numba.analysis import estimators
from ddm_numba.analysis.fields import network_side
from ddm_numba.stats import EnsembleEprTerms, Stats, sample_stats

BOX = [[-2.0, 2.0]]


def test_sums_equal_the_statistics_of_the_paths(dw_model):
    traj = sample_network(dw_model, trials=6, time=4.0, seed=2, progress=None)
    burn = 1.0
    stats = Stats(BOX, bins=16, max_lag=5, burn_in=burn).add(traj)
    z = traj.z[:, traj.t >= burn - 1e-12]
    flat = z.reshape(-1, 1)
    out = stats.summary()
    assert out["records"] == flat.shape[0] and out["trials"] == 6
    assert np.allclose(out["mean"], flat.mean(axis=0), rtol=1e-12, atol=1e-14)
    assert np.allclose(out["covariance"], np.cov(flat.T, bias=True), rtol=1e-10)
    counts, _ = np.histogram(flat[:, 0], bins=np.linspace(-2, 2, 17))
    # np.histogram closes its last bin on the right; no state sits exactly on +2
    assert out["histogram"]["counts"][0] == counts.tolist()
    assert out["histogram"]["under"][0] + out["histogram"]["over"][0] == \
        np.sum((flat < -2) | (flat >= 2))
    T = z.shape[1]
    for lag in range(6):
        direct = np.sum(z[:, :T - lag, 0] * z[:, lag:, 0])
        assert np.isclose(out["autocorrelation"]["sum"][lag][0], direct, rtol=1e-12)
        assert out["autocorrelation"]["pairs"][lag] == 6 * (T - lag)


def test_shards_merge_into_one_run(dw_model):
    """Counts exactly, sums to rounding; and sample_stats in shards is one run's statistics."""
    kw = dict(time=3.0, seed=5, progress=None)
    whole = Stats(BOX, bins=20, max_lag=3, wells=[[-1.0], [1.0]]).add(
        sample_network(dw_model, trials=12, **kw))
    merged = Stats(BOX, bins=20, max_lag=3, wells=[[-1.0], [1.0]])
    for a, n in [(0, 5), (5, 5), (10, 2)]:
        merged.merge(Stats(BOX, bins=20, max_lag=3, wells=[[-1.0], [1.0]]).add(
            sample_network(dw_model, trials=n, first_trial=a, **kw)))
    w, m = whole.summary(), merged.summary()
    for key in ("trials", "records"):
        assert w[key] == m[key]
    assert w["histogram"] == m["histogram"] and w["wells"]["occupancy"] == m["wells"]["occupancy"]
    assert w["wells"]["switches"] == m["wells"]["switches"]
    assert w["autocorrelation"]["pairs"] == m["autocorrelation"]["pairs"]
    assert np.allclose(w["mean"], m["mean"], rtol=1e-12)
    assert np.allclose(w["autocorrelation"]["sum"], m["autocorrelation"]["sum"], rtol=1e-12)
    streamed = sample_stats(dw_model, 12, 5, Stats(BOX, bins=20, max_lag=3,
                                                    wells=[[-1.0], [1.0]]), **kw)
    s = streamed.summary()
    assert s["histogram"] == m["histogram"] and s["sums"] == m["sums"]    # the same order
    with pytest.raises(DDMError, match="different settings"):
        merged.merge(Stats(BOX, bins=21))


def test_wells_on_a_path_written_by_hand():
    """Wells at ±1, radius 0.5: the path −1, −0.9, 0, 1, 1.1, 0.2, −1.2, 0.9 visits 1, 1, none,
    2, 2, none, 1, 2: three switches (1→2, 2→1, 1→2), first passage at t = 3."""
    t = np.arange(8.0)
    z = np.array([-1, -0.9, 0, 1, 1.1, 0.2, -1.2, 0.9])[None, :, None]
    out = Stats(BOX, bins=4, wells=[[-1.0], [1.0]], well_radius=0.5).add((t, z)).summary()
    wells = out["wells"]
    assert wells["occupancy"] == [3, 3] and wells["occupancy_none"] == 2
    assert wells["switches"] == [[0, 2], [1, 0]]
    assert wells["first_passage"]["count"] == 1 and wells["first_passage"]["mean"] == 3.0


def test_ensemble_epr_equals_the_estimator_on_the_paths(dw_model):
    traj = sample_network(dw_model, trials=5, time=3.0, seed=8, progress=None)
    terms = EnsembleEprTerms(dw_model)
    out = Stats(BOX, epr=terms).add(traj).summary()["ensemble_epr"]
    side = network_side(dw_model)
    flat = traj.z.reshape(-1, 1)
    f = side.drift(flat).reshape(traj.z.shape)
    div = side.divergence(flat).reshape(traj.z.shape[:2])
    value, stderr = estimators.ensemble_epr(f, div, side.D)
    assert np.isclose(out["epr"], value, rtol=1e-10) and np.isclose(out["stderr"], stderr,
                                                                     rtol=1e-8)


def test_bad_inputs():
    with pytest.raises(DDMError, match="box"):
        Stats([[1.0, 0.0]])
    with pytest.raises(DDMError, match="two wells"):
        Stats(BOX, wells=[[0.0]])
    with pytest.raises(DDMError, match="shape"):
        Stats(BOX).add((np.arange(3.0), np.zeros((2, 3, 2))))
    with pytest.raises(DDMError, match="no paths"):
        Stats(BOX).summary()


def test_stats_cli(tmp_path, dw_model):
    from click.testing import CliRunner
    from ddm_numba_cli.main import main
    model = tmp_path / "m.npz"
    dw_model.save(model)
    runner = CliRunner()
    res = runner.invoke(main, ["sample", str(model), "--stats", str(tmp_path / "s.json"),
                               "--trials", "9", "--shard", "4", "--time", "2", "--wells", "-1;1",
                               "--max-lag", "2", "--epr", "-q"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "s.json").read_text())
    assert out["trials"] == 9 and "wells" in out and "ensemble_epr" in out
    assert len(out["autocorrelation"]["acf"]) == 3
    res = runner.invoke(main, ["sample", str(model), "--stats", str(tmp_path / "t.json"),
                               "--out", str(tmp_path / "t.npz")])
    assert res.exit_code == 2 and "keeps no paths" in res.output
    res = runner.invoke(main, ["sample", str(model), "--stats", str(tmp_path / "t.json"),
                               "--wells", "1,2"])
    assert res.exit_code == 2 and "coordinates" in res.output
