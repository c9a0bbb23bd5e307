"""examples/sequential_memory.py in its quick setting (30 trials x 100 time units, grid 100).

Tolerances are wider than the full run's (0.05 / 15 % / 10 %) because the quick run has about a
third as many hops and a coarser grid; they are still tight enough to catch a network that lost
the counter-clockwise current (forward fraction would fall towards 1/2) or its wells.
"""
import json
import math

import numpy as np
import pytest

# the examples end to end (reduced): the long tier, `pytest -m slow`
pytestmark = pytest.mark.slow


def test_sequential_memory_quick(tmp_path, load_example):
    res = load_example("sequential_memory").run(str(tmp_path), quick=True)
    assert (tmp_path / "sequential_memory.png").stat().st_size > 10000
    with open(tmp_path / "sequential_memory.json") as fh:
        assert json.load(fh)["system"] == "ring_wells"
    # three memories on the unit circle, 120 degrees apart, visited in a cycle
    wells = np.array(res["wells"])
    assert wells.shape == (3, 2)
    assert np.allclose(np.linalg.norm(wells, axis=1), 1.0, atol=0.15)
    assert sorted(res["next_ccw"]) == [0, 1, 2]
    m = res["figures_of_merit"]
    tr = res["transitions"]
    # enough hops to mean anything (full run: 555 in 100 x 190 time units)
    assert tr["network"]["transitions"] >= 50 and tr["target"]["transitions"] >= 50
    # forward fraction: the target is ~1 (kappa = 0.5 dominates); 0.1 is far below the gap to 1/2
    assert m["forward_fraction"]["target"] > 0.9
    assert m["forward_fraction"]["abs_diff"] <= 0.1
    # dwell: ~100 hops per side, so a few-percent sampling error; same noise makes it smaller
    assert m["mean_dwell"]["rel_diff"] <= 0.25
    # e_p on a 50/100 grid with Richardson: ~1 % discretisation error on each side
    assert m["epr_grid"]["rel_diff"] <= 0.15
    assert 0.4 < m["epr_grid"]["target"] < 0.55
    # W_s alone: leaves the manifold and freezes (measured: no hop, |z| ~ 1400 in the read-out)
    w = res["W_s_only"]
    assert w["off_manifold_rel_on_target_samples"] > 0.5
    assert w["never_hops"]
    assert math.isfinite(res["timing_s"]["total"])
