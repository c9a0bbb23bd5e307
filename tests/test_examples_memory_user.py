"""The examples associative_memory.py (application 2) and my_system.py (application 6, a user's
own system through the CLI), run in their --quick settings.

Tolerances are wider than the full runs' (which match to ~1e-4) because quick runs fit fewer
neurons with fewer iterations and sample far fewer trials; they stay meaningful because network
and target are driven by the same noise, so their difference measures the fit, not sampling
error.
"""
import os
import shutil
import sys

import pytest

# the examples end to end (reduced): the long tier, `pytest -m slow`
pytestmark = pytest.mark.slow


def test_associative_memory_quick(tmp_path, load_example):
    m = load_example("associative_memory").run(str(tmp_path), quick=True)
    assert m["cue"]["cues_total"] >= 200
    assert m["e_f"] < 5e-3                      # quick fit: ~4e-4 measured
    # a 1.5-amplitude pulse merges the wells, so the target lands in the cued memory nearly
    # always (1.000 over 2000 cues in the full run); 0.9 leaves room for a rare spontaneous hop
    # within the settling time, and network vs target within 5 points (200 cues: 1 cue = 0.5)
    assert m["success_target"] >= 0.9
    assert m["success_network"] >= 0.9
    assert abs(m["success_network"] - m["success_target"]) <= 0.05
    # spontaneous hops: only ~15 per side in the quick run, so a couple of hops that happen on one
    # side and not the other (near-barrier points) move the rate by ~15 %; 40 % still fails a
    # network whose barriers are wrong (the rate is exponential in the barrier height)
    assert m["spontaneous"]["hops_target"] >= 5
    assert m["rate_rel_diff"] <= 0.4
    assert os.path.getsize(tmp_path / "associative_memory.png") > 10000
    assert (tmp_path / "associative_memory.json").exists()


def test_user_system_cli_quick(tmp_path, monkeypatch, load_example):
    # the example calls the `ddm` console script; make the venv's one findable
    bindir = os.path.dirname(sys.executable)
    monkeypatch.setenv("PATH", bindir + os.pathsep + os.environ.get("PATH", ""))
    if shutil.which("ddm") is None:
        pytest.skip("no `ddm` console script installed")
    m = load_example("my_system").run(str(tmp_path), quick=True)
    fit_cmd, sample_cmd = m["commands"][0], m["commands"][1]
    assert fit_cmd["command"].startswith("ddm fit ") and fit_cmd["rc"] == 0
    assert "--plot" in sample_cmd["command"] and sample_cmd["rc"] == 0
    assert m["e_f"] < 5e-3                      # quick fit: ~4e-4 measured
    assert m["e_D"] < 1e-8                      # constant D with a zero row: closed form, exact
    # same noise: stationary stds agree to ~1e-4 relative in practice; 3 % still rejects a wrong
    # noise row (sigma off by 3 %) or a wrong damping mu
    for a, b in zip(m["std_network"], m["std_target"]):
        assert abs(a - b) <= 0.03 * b
    # Van der Pol (mu = 1): period ~6.66 deterministically, ~6.8 with this noise; amplitude ~2.0
    assert 6.3 < m["period_target"] < 7.2
    assert abs(m["period_network"] - m["period_target"]) <= 0.02 * m["period_target"]
    assert abs(m["amplitude_network"] - m["amplitude_target"]) <= 0.02 * m["amplitude_target"]
    assert os.path.getsize(tmp_path / "vdp.png") > 10000
    assert os.path.getsize(tmp_path / "van_der_pol.png") > 10000
