"""The example chaos.py (application 1: lorenz over several seeds), run in its --quick setting
(2 seeds, 256 neurons, 16 trials × 30 time units, Lyapunov exponents from 8 points × 25 time
units).

Tolerances are wider than the full run's (5% on λ, 3% on stds, 15% on switch rates) because the
quick run fits fewer neurons and averages over far less time:
- λ from 8 runs of 25 time units has a standard error of ~2-3% (per-run scatter ~0.05), so 10%
  is ~4 standard errors, while a network that is not chaotic (λ ≤ 0) or much more chaotic
  still fails;
- ~200 lobe switches per side: network and target share the noise but chaos decorrelates their
  paths within a few time units, so the switch rates differ by Poisson-like ~7-10%; 30% still
  fails a network whose wings or saddle are misplaced;
- stds over ~400 time units of chaotic trajectory (~2 units correlation time) scatter ~2-3%;
  8% leaves room.
"""
import json
import pytest

# the examples end to end (reduced): the long tier, `pytest -m slow`
pytestmark = pytest.mark.slow


def test_chaos_quick(tmp_path, load_example):
    m = load_example("chaos").run(str(tmp_path), quick=True)
    assert (tmp_path / "chaos.png").stat().st_size > 0
    with open(tmp_path / "chaos.json") as fh:
        assert json.load(fh)["seeds"] == 2
    # the target's exponent itself (literature 0.9056; 32 points × 50 units: stderr ~0.007)
    assert abs(m["lyap_target"] - 0.9056) < 0.04
    assert m["seeds"] == 2 and m["chaotic_seeds"] == 2
    for r in m["per_seed"]:
        assert r["e_f"] < 5e-3                       # quick fit: ~8e-4 measured
        assert r["chaotic"]                          # both wings, λ > 0.5
        assert r["flow_switches"] >= 10              # ~25-30 in 50 time units measured
        assert r["lyap_rel_diff"] < 0.10
        assert max(r["std_rel_diff"]) < 0.08
        assert r["switches_target"] >= 100
        assert r["switch_rel_diff"] < 0.30
