"""The `ddm` command: the jobs of the README, exit codes, and messages that name what was wrong."""
import json
import os
import subprocess
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

from ddm_numba import load_model
from ddm_numba.simulate import Trajectories
from ddm_numba_cli.main import main


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
    return invoke


def test_systems(run):
    res = run("systems", "--json")
    assert res.exit_code == 0
    names = {s["name"] for s in json.loads(res.output)}
    assert names == {"double_well", "ou2d", "limit_cycle", "lorenz", "multiwell", "ring_wells",
                     "multiplicative"}
    assert "sigma=0.7" in run("systems").output


def test_fit_sample_plot(run, tmp_path):
    model, traj, png = tmp_path / "m.npz", tmp_path / "t.npz", tmp_path / "p.png"
    res = run("fit", "double_well", "--neurons", 32, "--max-iter", 5, "--param", "sigma=0.5",
              "--out", model, "-q")
    assert res.exit_code == 0, res.output
    assert "e_f" in res.output
    assert load_model(model).meta["system"]["params"]["sigma"] == 0.5
    res = run("sample", model, "--trials", 4, "--time", 3, "--out", traj, "--plot", png)
    assert res.exit_code == 0, res.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = run("sample", model, "--target", "--trials", 4, "--time", 3, "--out", tmp_path / "g.npz")
    assert res.exit_code == 0
    with np.load(tmp_path / "g.npz") as data:
        assert json.loads(str(data["meta"]))["kind"] == "target"


@pytest.mark.parametrize("args, code, message", [
    (["fit", "double_well", "--out", "x.npz", "--param", "sigma"], 2, "NAME=VALUE"),
    (["fit", "double_well", "--out", "x.npz", "--param", "sigma=abc"], 2, "not a number"),
    (["fit", "double_well", "--out", "x.npz", "--param", "nosuch=1"], 1, "no parameter"),
    (["fit", "no_such_system", "--out", "x.npz"], 1, "unknown system"),
    (["fit", "double_well", "--out", "x.txt"], 2, "must end in .npz"),
    (["fit", "double_well", "--out", "x.npz", "--dale", "0.8", "--method", "varpro"], 1,
     "--method joint"),
    (["fit", "double_well", "--out", "x.npz", "--neurons", "0"], 2, "--neurons"),
    (["sample", "missing.npz", "--out", "t.npz"], 1, "does not exist"),
])
def test_bad_usage(run, tmp_path, args, code, message):
    os.chdir(tmp_path)
    res = run(*args)
    assert res.exit_code == code, res.output
    assert message in res.output
    assert not os.path.exists("x.npz") and not os.path.exists("t.npz")


def test_bad_input_schedule(run, tmp_path, mw_model):
    model = tmp_path / "mw.npz"
    mw_model.save(model)
    for bad, message in (("1:2", "T0:T1"), ("0:1:1", "has 1 values"), ("2:1:1,1", "before")):
        res = run("sample", model, "--out", tmp_path / "t.npz", "--input", bad)
        assert res.exit_code == 2 and message in res.output
    assert not (tmp_path / "t.npz").exists()


USER_SYSTEM = textwrap.dedent("""
    import numpy as np
    from ddm_numba import System

    class Cubic(System):
        name, d, m, domain, dt, duration = "cubic", 1, 1, [[-2, 2]], 0.01, 100.0
        params = {"sigma": 0.5}
        constant_diffusion = True
        def drift(self, z, u=None): return -z ** 3
        def diffusion(self, z): return np.full((len(z), 1, 1), self.sigma)

    class Broken(Cubic):
        def drift(self, z, u=None): return np.where(z > 1.5, np.nan, -z)
""")


def test_user_system_from_file(run, tmp_path):
    src = tmp_path / "mysys.py"
    src.write_text(USER_SYSTEM)
    model = tmp_path / "cubic.npz"
    res = run("fit", f"{src}:Cubic", "-N", 32, "--max-iter", 5, "--out", model, "-q",
              "--param", "sigma=0.3")
    assert res.exit_code == 0, res.output
    net = load_model(model)
    assert net.meta["system"]["spec"] == f"{src}:Cubic"
    res = run("sample", model, "--target", "--trials", 2, "--time", 1, "--out", tmp_path / "t.npz")
    assert res.exit_code == 1 and "--system" in res.output      # a file never loads code
    res = run("sample", model, "--target", "--trials", 2, "--time", 1, "--out", tmp_path / "t.npz",
              "--system", f"{src}:Cubic")
    assert res.exit_code == 0, res.output
    # the parameters the model was fitted with come along (sigma=0.3, not the default)
    assert Trajectories.load(tmp_path / "t.npz").meta["system"]["params"]["sigma"] == 0.3
    bad = tmp_path / "broken.npz"
    res = run("fit", f"{src}:Broken", "-N", 16, "--out", bad, "-q")
    assert res.exit_code == 1 and "drift of system 'cubic' is not finite" in res.output
    assert not bad.exists()


def test_console_script_is_installed():
    out = subprocess.run(["ddm", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "fit" in out.stdout and "sample" in out.stdout


def test_sample_first_trial_gives_the_rows_of_one_run(run, tmp_path, dw_model):
    model = tmp_path / "m.npz"
    dw_model.save(model)
    whole, part = tmp_path / "whole.npz", tmp_path / "part.npz"
    assert run("sample", model, "--trials", 6, "--time", 1, "--out", whole, "-q").exit_code == 0
    res = run("sample", model, "--trials", 2, "--first-trial", 3, "--time", 1, "--out", part, "-q")
    assert res.exit_code == 0, res.output
    with np.load(whole) as w, np.load(part) as p:
        assert np.array_equal(p["z"], w["z"][3:5])
        assert json.loads(str(p["meta"]))["first_trial"] == 3


@pytest.mark.slow      # worker processes (tests/test_cluster.py)
def test_sweep_command_on_local_workers(run, tmp_path):
    """`ddm sweep` with its own LocalCluster (one worker): the table and the cell's model."""
    pytest.importorskip("distributed")
    out = tmp_path / "sw"
    res = run("sweep", "double_well", "-N", "16", "--seeds", "0:1", "--param", "sigma=0.5",
              "--max-iter", 3, "--check-time", 0, "--workers", 1, "--out", out, "-q")
    assert res.exit_code == 0, res.output
    rows = (out / "results.csv").read_text().splitlines()
    assert rows[0].startswith("cell,system,neurons,seed,params,status,e_f") and len(rows) == 2
    assert "double_well_N16_seed0_sigma=0.5,double_well,16,0,sigma=0.5,done" in rows[1]
    assert load_model(out / "double_well_N16_seed0_sigma=0.5.npz").meta["sweep"]["params"] == {
        "sigma": 0.5}
    res = run("sweep", "double_well", "--out", out, "--workers", 1, "--scheduler", "tcp://x:1")
    assert res.exit_code == 2 and "not both" in res.output
