"""The nonequilibrium and multiplicative-noise examples, in their --quick form (96 neurons, fewer
and shorter trials, a coarser 2-D grid), with the figures of merit they print.

Each example runs once per module (fixtures); about 30 s together on 2 cores.
"""
import json
import math

import pytest

# the examples end to end (reduced): the long tier, `pytest -m slow`
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def noneq(tmp_path_factory, load_example):
    out = tmp_path_factory.mktemp("nonequilibrium")
    return out, load_example("nonequilibrium").run(out, quick=True)


@pytest.fixture(scope="module")
def mult(tmp_path_factory, load_example):
    out = tmp_path_factory.mktemp("multiplicative")
    return out, load_example("multiplicative_noise").run(out, quick=True)


def test_nonequilibrium_files(noneq):
    out, res = noneq
    for name in ("ou2d", "limit_cycle"):
        png = out / f"nonequilibrium_{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((out / "nonequilibrium.json").read_text())
    assert saved["quick"] is True
    assert saved["ou2d"]["epr_network"] == pytest.approx(res["ou2d"]["epr_network"])


# e_p network vs target. The full run asks 5% (ou2d) and 10% (limit_cycle) at 256 neurons; the
# quick networks have 96 neurons, so the bounds are widened by half. They stay meaningful: a
# reversible network (a_i ∥ D m_i) has e_p = 0, i.e. a relative difference of 100%, and a
# network whose rotation speed ω is off by 5% would already be 10% off in e_p ∝ ω².
@pytest.mark.parametrize("name, rel_tol", [("ou2d", 0.075), ("limit_cycle", 0.15)])
def test_entropy_production_matches(noneq, name, rel_tol):
    r = noneq[1][name]
    assert r["epr_target"] > 0 and r["epr_network"] > 0
    assert r["epr_rel_diff"] <= rel_tol, r


# The target's grid e_p against the closed form (8 for ou2d; (2ω²/σ²) E[r²] ≈ 22.23 for the
# Stuart–Landau cycle). Richardson from 50 and 100 cells per axis is within ~0.05% here; 1%
# leaves room for the coarse grid and still catches a wrong convention (D vs D/2 is a factor 2).
@pytest.mark.parametrize("name", ["ou2d", "limit_cycle"])
def test_target_grid_epr_is_exact(noneq, name):
    r = noneq[1][name]
    assert r["epr_exact"] is not None
    assert r["epr_target"] == pytest.approx(r["epr_exact"], rel=0.01)
    if name == "ou2d":
        assert r["epr_exact"] == 8.0


# C12(τ) − C21(τ): network and target are driven by the same noise (same seed), so their curves
# differ only through the drift error; 10% of the curve's own RMS is generous (≈ 1e-3 observed)
# yet fails for a reversible network (curve ≈ 0) or one rotating the other way (difference ≈ 2×).
# The sign of the peak is the sense of rotation: ou2d (f = −Bz, B = [[1, −2], [2, 1]]) turns
# clockwise, the Stuart–Landau cycle (+ωJz) counter-clockwise.
@pytest.mark.parametrize("name, sign", [("ou2d", 1.0), ("limit_cycle", -1.0)])
def test_cross_correlation_asymmetry(noneq, name, sign):
    r = noneq[1][name]
    assert r["cc_asym_rms_diff"] <= 0.1 * r["cc_asym_rms_target"], r
    assert math.copysign(1.0, r["cc_asym_peak_target"]) == sign
    assert math.copysign(1.0, r["cc_asym_peak_network"]) == sign
    assert abs(r["cc_asym_peak_network"]) > 0.5       # far from the reversible 0


def test_multiplicative_files(mult):
    out, res = mult
    assert (out / "multiplicative_noise.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((out / "multiplicative_noise.json").read_text())
    assert saved["e_D"] == pytest.approx(res["e_D"])


def test_multiplicative_diffusion(mult):
    r = mult[1]
    # e_D ≤ 0.03 is the application's own criterion and depends on the fit, not on sampling; the
    # quick 96-neuron network reaches ~1e-4, so the bound is kept as it is.
    assert r["e_D"] <= 0.03
    # Pointwise on the training box: D grows 23-fold from z = 0 to |z| = 3; 5% anywhere rules out a
    # constant or a poorly curved D_net (observed ~0.1%).
    assert r["D_max_rel_err_on_domain"] <= 0.05


def test_multiplicative_density(mult):
    r = mult[1]
    # Sampling floor: the target's own samples (same seeds) are ~0.008 from the exact law with the
    # quick run's ~1.2e5 correlated samples in 60 bins. The network may add at most 0.02 to that
    # (additive noise with D = a would give a visibly narrower law, variance a/2 = 0.10 vs 0.133).
    assert r["tv_target_vs_exact"] <= 0.03
    assert r["tv_network_vs_exact"] <= r["tv_target_vs_exact"] + 0.02
    # The network's Fokker–Planck grid density (its own drift and D_net(z), no sampling noise)
    # against the exact law restricted to the box: L1 ~6e-4 observed; 0.02 is the grid-plus-fit
    # budget and is far below what a wrong D would give.
    assert r["grid_L1_network_vs_exact"] <= 0.02
    assert r["var_network"] == pytest.approx(r["var_exact"], rel=0.15)   # heavy tails: loose
