"""Sweeps and sharded sampling on a real dask.distributed LocalCluster (2 worker processes, one
thread each, numba and BLAS pinned as ddm_numba.cluster pins them): the models equal serial
fits bit for bit, a rerun resumes, a worker killed mid-task is survived, a failing cell becomes a
row, and a 2-worker sample equals the local one."""
import os

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from ddm_numba import DDMError, fit, sample_network  # noqa: E402
from ddm_numba.cluster import (WORKER_ENV, cell_name, parse_range, parse_sweep_params,  # noqa: E402
                               read_table, sample_sharded, sweep)

FIT = dict(max_iter=8, self_check_time=1.0, device="cpu")


@pytest.fixture(scope="module")
def scheduler():
    """One LocalCluster for the module: the sweeps connect to it by its address."""
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       env=dict(WORKER_ENV), dashboard_address=None)
    yield cluster.scheduler_address
    cluster.close()


def _arrays(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files if k not in ("meta", "format")}


def _same(a, b):
    return sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.slow     # worker processes: about 40 s of the default tier, so in the long one
def test_sweep_models_equal_serial_fits_and_a_rerun_resumes(scheduler, tmp_path):
    out = tmp_path / "sweep"
    rows = sweep("limit_cycle", [24], [0, 1], out, scheduler=scheduler, progress=None, **FIT)
    assert [r["cell"] for r in rows] == ["limit_cycle_N24_seed0", "limit_cycle_N24_seed1"]
    assert all(r["status"] == "done" for r in rows)
    for r in rows:      # each cell equals ddm fit here (2 numba threads, BLAS default)
        serial = fit("limit_cycle", 24, seed=int(r["seed"]), progress=None, **FIT)
        serial.save(tmp_path / "serial.npz")
        assert _same(_arrays(out / r["file"]), _arrays(tmp_path / "serial.npz")), r["cell"]
        assert float(r["e_f"]) == serial.meta["fit"]["e_f"]
    table = read_table(out / "results.csv")
    # "killed half-way": one cell's file and the table are gone; the rerun fits that cell only
    kept = (out / rows[0]["file"]).read_bytes()
    os.remove(out / rows[1]["file"])
    os.remove(out / "results.csv")
    again = sweep("limit_cycle", [24], [0, 1], out, scheduler=scheduler, progress=None, **FIT)
    assert (out / rows[0]["file"]).read_bytes() == kept          # read back, not refitted
    table2 = read_table(out / "results.csv")
    strip = lambda t: [{k: v for k, v in r.items() if k != "seconds"} for r in t]  # noqa: E731
    assert strip(table2) == strip(table) and table2[0]["seconds"] == table[0]["seconds"]
    assert [r["cell"] for r in again] == [r["cell"] for r in rows]


KILLER = '''
import os
import numpy as np
from ddm_numba import System

MARK = {mark!r}


def _in_worker():
    try:
        from distributed import get_worker
        get_worker()
        return True
    except Exception:
        return False


class Fragile(System):
    """A 1-D OU whose drift kills its worker process the first time it runs on one (a marker
    file says it happened), and raises for k = 2."""
    name = "fragile"
    d, m, p = 1, 1, 0
    domain = np.array([[-2.0, 2.0]])
    dt = 0.01
    duration = 50.0

    def __init__(self, k=1.0):
        self.k = float(k)
        self.params = {{"k": self.k}}

    def drift(self, z, u=None):
        if _in_worker() and not os.path.exists(MARK):
            open(MARK, "w").close()
            os._exit(1)
        if self.k == 2.0:
            raise ValueError("k = 2 is not allowed")
        return -self.k * z

    def diffusion(self, z):
        return np.full((len(z), 1, 1), 0.5)
'''


@pytest.mark.slow
def test_a_killed_worker_is_survived_and_a_failing_cell_is_a_row(scheduler, tmp_path):
    mark = tmp_path / "killed-once"
    spec = tmp_path / "fragile.py"
    spec.write_text(KILLER.format(mark=str(mark)))
    out = tmp_path / "sweep"
    rows = sweep(f"{spec}:Fragile", [8], [0], out, params={"k": [1.0, 2.0]},
                 scheduler=scheduler, progress=None, retries=1, **FIT)
    assert mark.exists()                               # a worker did die mid-task
    by_k = {r["params"]: r for r in rows}
    assert by_k["k=1"]["status"] == "done" and (out / by_k["k=1"]["file"]).exists()
    assert by_k["k=2"]["status"] == "failed" and "k = 2 is not allowed" in by_k["k=2"]["error"]
    assert read_table(out / "results.csv")[1]["status"] == "failed"


@pytest.mark.slow
def test_a_two_worker_sample_equals_the_local_one(scheduler, dw_model):
    kw = dict(time=2.0, seed=4, save_neurons=True)
    local = sample_network(dw_model, trials=7, progress=None, **kw)
    sharded = sample_sharded(dw_model, 7, 3, scheduler=scheduler, **kw)
    assert np.array_equal(sharded.z, local.z) and np.array_equal(sharded.x, local.x)
    assert sharded.meta["shards"] == {"size": 3, "count": 3}


def test_sweep_arguments():
    assert parse_range("0:3", "s") == [0, 1, 2] and parse_range("4,8", "s") == [4, 8]
    assert parse_sweep_params(["sigma=0.1,0.2"]) == {"sigma": [0.1, 0.2]}
    assert cell_name("a/b", 8, 1, {"s": 0.5}) == "a-b_N8_seed1_s=0.5"
    for bad in ["", "x", "3:1", "-1"]:
        with pytest.raises(DDMError):
            parse_range(bad, "--seeds")
    with pytest.raises(DDMError, match="NAME=V1"):
        parse_sweep_params(["sigma"])


@pytest.mark.slow
def test_statistics_on_two_workers_equal_the_local_ones(scheduler, dw_model):
    """Shards reduced on the workers, merged in trial order: the same sums as a local run."""
    from ddm_numba.stats import EnsembleEprTerms, Stats, sample_stats

    def make():
        return Stats([[-2.0, 2.0]], bins=10, max_lag=2, wells=[[-1.0], [1.0]],
                     epr=EnsembleEprTerms(dw_model))
    kw = dict(time=2.0, seed=3, progress=None)
    local = sample_stats(dw_model, 10, 4, make(), **kw).summary()
    remote = sample_stats(dw_model, 10, 4, make(), scheduler=scheduler, **kw).summary()
    assert remote == local


@pytest.mark.slow
def test_ddm_sample_on_workers_writes_the_local_paths(tmp_path, dw_model):
    """`ddm sample --workers 2 --shard 2` (its own LocalCluster) writes the file of a local run."""
    from click.testing import CliRunner
    from ddm_numba_cli.main import main
    model = tmp_path / "m.npz"
    dw_model.save(model)
    runner = CliRunner()
    common = ["sample", str(model), "--trials", "5", "--time", "1", "--seed", "6", "-q"]
    local = runner.invoke(main, common + ["--out", str(tmp_path / "local.npz")],
                          catch_exceptions=False)
    remote = runner.invoke(main, common + ["--out", str(tmp_path / "remote.npz"), "--shard", "2",
                                           "--workers", "2"], catch_exceptions=False)
    assert local.exit_code == 0 and remote.exit_code == 0, remote.output
    with np.load(tmp_path / "local.npz") as a, np.load(tmp_path / "remote.npz") as b:
        assert np.array_equal(a["z"], b["z"]) and np.array_equal(a["t"], b["t"])
    target = runner.invoke(main, common + ["--target", "--out", str(tmp_path / "tr.npz"),
                                           "--shard", "3", "--workers", "1"],
                           catch_exceptions=False)
    assert target.exit_code == 0, target.output
