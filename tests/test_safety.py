"""Files never run code, commands never destroy data, bad input gets a clear error, and
Ctrl-C/SIGTERM lose nothing. Each test names the case it guards (issue 12's list)."""
import json
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

from ddm_numba import DDMError, fit, interrupt, load_model, sample_network, sample_target
from ddm_numba import simulate
from ddm_numba.checkpoint import load_checkpoint
from ddm_numba.simulate import DataWarning, Trajectories
from ddm_numba_cli.main import main

USER_SYSTEM = '''
import numpy as np
from ddm_numba import System

class Cubic(System):
    name, d, m, domain, dt, duration, params = "cubic", 1, 1, [[-2, 2]], 0.01, 20.0, {"sigma": 0.5}
    constant_diffusion = True
    def drift(self, z, u=None):
        return -z ** 3
    def diffusion(self, z):
        return np.full((len(z), 1, 1), self.sigma)

class Raises(Cubic):
    name = "raises"
    def drift(self, z, u=None):
        return helper(z)

def helper(z):
    return z / undefined_name

class Escapes(Cubic):
    name = "escapes"
    def drift(self, z, u=None):
        return z ** 3

NOT_CALLABLE = 3
'''


def cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture()
def user_file(tmp_path):
    path = tmp_path / "cubic.py"
    path.write_text(USER_SYSTEM)
    return path


def craft(src, dst, **system):
    """A copy of the .npz src whose meta.system is replaced by ``system``."""
    arrays = dict(np.load(src))
    meta = json.loads(str(arrays["meta"]))
    meta["system"] = system
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(dst, **arrays)
    return dst


# -- 1. nothing in a file is ever executed ------------------------------------------------------

@pytest.mark.parametrize("spec_kind", ["os", "file"])
def test_a_crafted_model_runs_nothing(tmp_path, dw_model, spec_kind):
    marker = tmp_path / "MARKER"
    evil_py = tmp_path / "evil.py"
    evil_py.write_text(f"open({str(marker)!r}, 'w').write('ran')\nclass S: pass\n")
    spec = "os:system" if spec_kind == "os" else f"{evil_py}:S"
    dw_model.save(tmp_path / "dw.npz")
    model = craft(tmp_path / "dw.npz", tmp_path / "evil.npz", name="double_well",
                  builtin=False, spec=spec, params={"command": f"touch {marker}"})
    before = model.read_bytes()
    for args in (["sample", model, "--target", "--out", tmp_path / "t.npz", "--time", 1],
                 ["sample", model, "--plot", tmp_path / "p.png", "--out", tmp_path / "t.npz",
                  "--time", 1],
                 ["analyze", model, "--out", tmp_path / "rep", "--no-figures"]):
        code, out = cli(*args)
        assert code == 1 and "--system" in out and "Traceback" not in out, out
        assert not marker.exists()
    assert model.read_bytes() == before
    assert not (tmp_path / "t.npz").exists() and not (tmp_path / "p.png").exists()
    # the same record in a trajectory file: fit --data uses no truth from it, runs nothing
    data = sample_target("double_well", trials=4, time=20, seed=1, record_every=1)
    data.save(tmp_path / "d.npz")
    craft(tmp_path / "d.npz", tmp_path / "evil_d.npz", name="double_well", builtin=False,
          spec=spec, params={"command": f"touch {marker}"})
    code, out = cli("fit", "--data", tmp_path / "evil_d.npz", "--neurons", 8, "--out",
                    tmp_path / "m.npz", "-q")
    assert code == 0 and not marker.exists(), out
    assert "e_f" not in load_model(tmp_path / "m.npz").meta["fit"]   # no truth was loaded


def test_a_user_system_model_samples_and_analyzes_when_named(tmp_path, user_file):
    spec = f"{user_file}:Cubic"
    code, out = cli("fit", spec, "--neurons", 24, "--max-iter", 10, "--out", tmp_path / "c.npz",
                    "-q")
    assert code == 0, out
    code, out = cli("sample", tmp_path / "c.npz", "--target", "--out", tmp_path / "t.npz",
                    "--time", 2, "--trials", 3)
    assert code == 1 and "your own system 'cubic'" in out and "--system" in out
    code, out = cli("sample", tmp_path / "c.npz", "--target", "--system", spec, "--out",
                    tmp_path / "t.npz", "--time", 2, "--trials", 3)
    assert code == 0, out
    assert Trajectories.load(tmp_path / "t.npz").meta["system"]["name"] == "cubic"
    code, out = cli("analyze", tmp_path / "c.npz", "--system", spec, "--out", tmp_path / "a",
                    "--no-figures", "--trials", 4, "--time", 5)
    assert code == 0 and (tmp_path / "a" / "report.json").exists(), out
    # a different system than the one fitted is refused
    code, out = cli("sample", tmp_path / "c.npz", "--target", "--system", "double_well",
                    "--out", tmp_path / "t2.npz", "--time", 2)
    assert code == 1 and "was fitted to system 'cubic'" in out


def test_user_code_that_raises_is_reported_with_its_own_lines(tmp_path, user_file):
    code, out = cli("fit", f"{user_file}:Raises", "--out", tmp_path / "r.npz", "-q")
    assert code == 1 and "drift raised NameError" in out and "undefined_name" in out
    assert "cubic.py" in out and "ddm_numba" not in out.split("raised", 1)[1]
    code, out = cli("fit", f"{user_file}:NOT_CALLABLE", "--out", tmp_path / "r.npz")
    assert code == 1 and "not a System subclass" in out
    for bad in (None, object(), 3.5):
        with pytest.raises(DDMError, match="a system is a built-in name"):
            fit(bad, 8, progress=None)
    with pytest.raises(DDMError, match="neurons must be a number"):
        fit("double_well", "many", progress=None)


# -- 2. no command overwrites its input; a failure leaves every output as it was ----------------

def test_out_equal_to_input_is_refused_before_any_work(tmp_path, dw_model):
    model = tmp_path / "m.npz"
    dw_model.save(model)
    before = model.read_bytes()
    for spelling in (model, tmp_path / "." / "m.npz"):
        code, out = cli("sample", model, "--out", spelling)
        assert code == 2 and "reads" in out
    os.symlink(model, tmp_path / "link.npz")
    code, out = cli("sample", tmp_path / "link.npz", "--out", model)
    assert code == 2
    data = tmp_path / "d.npz"
    sample_target("double_well", trials=4, time=20, seed=1, record_every=1).save(data)
    data_before = data.read_bytes()
    code, out = cli("fit", "--data", data, "--out", data)
    assert code == 2 and data.read_bytes() == data_before
    assert model.read_bytes() == before


def test_a_failing_plot_leaves_the_outputs_as_they_were(tmp_path, dw_model):
    model, traj = tmp_path / "m.npz", tmp_path / "t.npz"
    dw_model.save(model)
    traj.write_bytes(b"previous")
    code, out = cli("sample", model, "--out", traj, "--plot", tmp_path / "p.png",
                    "--burn-in", 50, "--time", 10)
    assert code == 2 and "--burn-in" in out
    assert traj.read_bytes() == b"previous" and not (tmp_path / "p.png").exists()
    # unwritable places are found before the work, and named as the user wrote them
    code, out = cli("sample", model, "--out", tmp_path)
    assert code == 2
    code, out = cli("fit", "double_well", "--out", tmp_path / "nope" / "m.npz")
    assert code == 2 and "does not exist" in out
    assert not list(tmp_path.glob(".tmp-*"))


# -- 3. validated at the edge -------------------------------------------------------------------

@pytest.mark.parametrize("args, code, message", [
    (["--record-every", 1000000000, "--time", 5], 1, "longer than the run"),
    (["--dt", 5], 1, "time constant"),
    (["--dt", 1e-9], 1, "steps per trial"),
    (["--time", "inf"], 2, "not a finite number"),
    (["--trials", 100000000], 1, "GiB"),
    (["--seed", 2 ** 63], 2, "--seed"),
    (["--input", "500:600:1"], 2, "takes no inputs"),
])
def test_sample_options_are_checked(tmp_path, dw_model, args, code, message):
    dw_model.save(tmp_path / "m.npz")
    got, out = cli("sample", tmp_path / "m.npz", "--out", tmp_path / "t.npz", *args)
    assert got == code and message in out and "Traceback" not in out, out
    assert not (tmp_path / "t.npz").exists()


def test_record_every_never_lengthens_the_run(dw_model):
    traj = sample_network(dw_model, trials=2, time=0.01, seed=0)
    assert traj.t[-1] == pytest.approx(0.01)
    traj = sample_network(dw_model, trials=2, time=1.0, seed=0, record_every=30)
    assert traj.t[-1] <= 1.0 + 1e-12 and traj.t[-1] > 1.0 - 30 * 0.01


def test_input_interval_outside_the_run_is_refused(mw_model):
    with pytest.raises(DDMError, match="wholly outside the run"):
        sample_network(mw_model, trials=2, time=5, inputs=["10:20:1,0"])
    sample_network(mw_model, trials=2, time=5, inputs=["4:20:1,0"])   # partly inside: fine


@pytest.mark.parametrize("args, message", [
    (["--tau", "nan"], "not a finite number"),
    (["--tau", "inf"], "not a finite number"),
    (["--reg", "inf"], "not a finite number"),
    (["--samples", 2, "--neurons", 32], "too few for 32 neurons"),
    (["--param", "sigma=1e200"], "overflow"),
    (["--neurons", 10000000], "memory"),
    (["--substeps", 100000], "--substeps"),
])
def test_fit_options_are_checked(tmp_path, args, message):
    code, out = cli("fit", "double_well", "--out", tmp_path / "m.npz", "-q", *args)
    assert code in (1, 2) and message in out and "Traceback" not in out, out
    assert not (tmp_path / "m.npz").exists()


def _data(tmp_path, z, t=None, name="d.npz"):
    t = np.arange(z.shape[1]) * 0.01 if t is None else t
    np.savez(tmp_path / name, format=np.array(simulate.TRAJ_FORMAT), t=t, z=z)
    return tmp_path / name


@pytest.mark.parametrize("kind, message", [
    ("bool", "booleans"), ("complex", "complex numbers"), ("str", "strings"),
    ("huge", "rescale"), ("constant", "constant"), ("t_str", "strings"),
])
def test_bad_data_is_refused(tmp_path, kind, message):
    z = sample_target("double_well", trials=4, time=20, seed=1, record_every=1).z
    t = None
    if kind == "bool":
        z = z > 0
    elif kind == "complex":
        z = z + 1j
    elif kind == "str":
        z = z.astype(str)
    elif kind == "huge":
        z = z * 1e200
    elif kind == "constant":
        z = np.ones_like(z)
    elif kind == "t_str":
        t = np.arange(z.shape[1]).astype(str)
    code, out = cli("fit", "--data", _data(tmp_path, z, t), "--neurons", 8,
                    "--out", tmp_path / "m.npz", "-q")
    assert code == 1 and message in out and "Traceback" not in out, out


def test_integer_data_are_read_with_a_warning(tmp_path):
    z = np.round(100 * sample_target("double_well", trials=4, time=20, seed=1,
                                     record_every=1).z).astype(np.int64)
    with pytest.warns(DataWarning, match="holds integers"):
        Trajectories.load(_data(tmp_path, z))


def test_target_escapes_are_not_blamed_on_dt(tmp_path, user_file):
    from ddm_numba import get_system
    system = get_system(f"{user_file}:Escapes")
    with pytest.raises(DDMError, match="escapes from there, not the step"):
        sample_target(system, trials=20, time=20, seed=0)
    with pytest.raises(DDMError, match="smaller --dt"):
        sample_target("double_well", trials=20, time=50, seed=0, dt=2.0)


def test_bad_meta_is_refused(tmp_path, dw_model):
    dw_model.save(tmp_path / "m.npz")
    arrays = dict(np.load(tmp_path / "m.npz"))
    for meta, message in (("{not json", "not valid JSON"), ("[1, 2]", "JSON object"),
                          ('{"system": "double_well"}', "'system' must be a JSON object"),
                          ('{"system": {"name": "double_well", "dt": -1}}', "positive")):
        np.savez(tmp_path / "bad.npz", **dict(arrays, meta=np.array(meta)))
        code, out = cli("sample", tmp_path / "bad.npz", "--out", tmp_path / "t.npz")
        assert code == 1 and message in out, out


# -- chunked sampling: the same numbers whatever the chunks ---------------------------------------

@pytest.mark.parametrize("which", ["dw", "mw"])
def test_chunking_does_not_change_the_paths(monkeypatch, dw_model, mw_model, which):
    net = dw_model if which == "dw" else mw_model
    kw = dict(trials=5, time=3.0, seed=4, inputs=["1:2:1,0"] if which == "mw" else ())
    whole = sample_network(net, **kw)
    monkeypatch.setattr(simulate, "CHUNK_SECONDS", 1e-9)     # every chunk one record long
    pieces = sample_network(net, **kw)
    assert np.array_equal(whole.z, pieces.z) and np.array_equal(whole.t, pieces.t)


# -- 4. interrupts lose nothing ----------------------------------------------------------------

def _interrupt(cmd, sig, wait_for, cwd, timeout=240):
    """Start cmd, wait until its stderr shows wait_for, send sig; (code, seconds to exit, err)."""
    # the child gets SIGINT's default disposition, as a program started from a terminal has
    # (a test runner started in the background passes on SIG_IGN, which Python then honours)
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    os.set_blocking(proc.stderr.fileno(), False)
    err, t0 = b"", time.time()
    while wait_for.encode() not in err and proc.poll() is None and time.time() - t0 < timeout:
        try:
            err += os.read(proc.stderr.fileno(), 65536)
        except BlockingIOError:
            time.sleep(0.05)
    assert proc.poll() is None, err.decode()
    sent = time.time()
    proc.send_signal(sig)
    rest = proc.communicate(timeout=60)[1]
    return proc.returncode, time.time() - sent, (err + rest).decode()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_fit_keeps_the_best_state_and_resumes(tmp_path, sig):
    (tmp_path / "m.npz").write_bytes(b"previous")
    cmd = [sys.executable, "-m", "ddm_numba_cli.main", "fit", "lorenz", "--neurons", "64",
           "--max-iter", "100000", "--out", "m.npz", "--checkpoint", "ck.npz"]
    code, seconds, err = _interrupt(cmd, sig, "iter", tmp_path)
    assert code == 128 + sig and "Traceback" not in err, err
    assert seconds < 5, seconds          # about a second, plus the interpreter's exit
    assert "best state so far saved in ck.npz" in err.strip().splitlines()[-1]
    assert (tmp_path / "m.npz").read_bytes() == b"previous"
    assert not list(tmp_path.glob(".tmp-*"))
    meta, arrays = load_checkpoint(tmp_path / "ck.npz")
    assert meta["stage"] == "drift" and meta["iteration"] >= 1 and set(arrays) >= {"A", "M"}
    net = fit("lorenz", 64, max_iter=3, resume=tmp_path / "ck.npz", progress=None)
    assert net.meta["training"]["stages"]["lowrank"]["loss"] <= meta["loss"] * (1 + 1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_sample_writes_nothing(tmp_path, dw_model, sig):
    dw_model.save(tmp_path / "m.npz")
    (tmp_path / "t.npz").write_bytes(b"previous")
    cmd = [sys.executable, "-m", "ddm_numba_cli.main", "sample", "m.npz", "--trials", "2000",
           "--time", "100000", "--record-every", "1000", "--out", "t.npz"]
    code, seconds, err = _interrupt(cmd, sig, "sampling the network", tmp_path)
    assert code == 128 + sig and "Traceback" not in err and seconds < 5, err
    assert (tmp_path / "t.npz").read_bytes() == b"previous"
    assert not list(tmp_path.glob(".tmp-*"))


def test_api_interrupt_is_a_keyboard_interrupt_at_a_safe_point(dw_model):
    """In Python, Ctrl-C inside a sampler is KeyboardInterrupt (interrupt.Interrupted), raised
    between chunks; here a pending SIGINT is simulated."""
    with pytest.raises(KeyboardInterrupt):
        with interrupt.trap():
            interrupt._pending.append(signal.SIGINT)
            sample_network(dw_model, trials=2, time=1.0)
    assert not interrupt.pending()


def test_warnings_are_one_line(tmp_path):
    z = np.round(100 * sample_target("double_well", trials=4, time=20, seed=1,
                                     record_every=1).z).astype(np.int64)
    with warnings.catch_warnings():
        code, out = cli("fit", "--data", _data(tmp_path, z), "--neurons", 8, "--out",
                        tmp_path / "m.npz", "-q")
    assert "Warning: " in out and "holds integers" in out and "warnings.warn" not in out


def test_a_failing_analysis_changes_nothing_in_its_folder(tmp_path, dw_model, monkeypatch):
    from ddm_numba import plotting
    from ddm_numba.analysis import report
    out = tmp_path / "rep"
    report.analyze(dw_model, out, trials=4, time=5, progress=None)
    before = {f.name: f.read_bytes() for f in out.iterdir()}

    def broken(*args, **kwargs):
        raise RuntimeError("figure failed")

    monkeypatch.setattr(plotting, "figure_parts", broken)    # the last figure: others made
    with pytest.raises(RuntimeError, match="figure failed"):
        report.analyze(dw_model, out, trials=4, time=5, seed=3, progress=None)
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before
    assert not list(tmp_path.glob(".tmp-*"))
