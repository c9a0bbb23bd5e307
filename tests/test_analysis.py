"""`ddm analyze` and the analysis of fitted networks against their targets (issue: analysis).

The exact cases of docs/irreversibility.md §6 are in test_linear_estimators.py (closed forms,
estimators), test_fokker_planck.py (grid solver) and test_dynamics.py (fixed points, Lyapunov).
This file checks the same routines on the package's targets and fitted networks.
"""
import json
import os

import numpy as np
import pytest
from scipy.linalg import expm

from ddm_numba import fit, get_system, sample_target
from ddm_numba.analysis import dynamics, estimators, fokker_planck, linear
from ddm_numba.analysis.connectivity import (constant_diffusion, decoder_alignment,
                                             epr_split_ensemble)
from ddm_numba.analysis.report import (analyze, circulation, grid_split, network_side,
                                       target_side, trajectory_estimators)
from ddm_numba.systems import System


@pytest.fixture(scope="module")
def ou_model():
    return fit("ou2d", 256, seed=0, progress=None)


def grid_epr(side, box, n=200):
    """Richardson value of the grid e_p from n/2 and n cells per axis, and the fine solution."""
    coarse = fokker_planck.solve_stationary(side.drift, side.D, box, n // 2)
    fine = fokker_planck.solve_stationary(side.drift, side.D, box, n)
    return fine.epr + (fine.epr - coarse.epr) / 3, fine


def test_ou2d_closed_form_grid_and_trajectory_estimator_agree(ou_model):
    """ou2d (B = [[1, −2], [2, 1]], σ = 1): e_p = (B12 − B21)²/tr B = 8 exactly
    (docs/irreversibility.md §2.1 item 9); the grid within 1%; the AR(1) estimator on
    Euler–Maruyama paths at dt = 0.002 (bias O(dt) ≈ 0.3%) within 4 of its stated standard errors
    (spread over 8 batches of trials); the network fitted with 256 neurons within 5% from its own
    f_net and D_net."""
    system = get_system("ou2d")
    side = target_side(system)
    exact = linear.ou_stationary(system.linear_matrix(), side.D).epr
    assert exact == pytest.approx(8.0, rel=1e-12)
    box = np.array([[-4.0, 4.0], [-4.0, 4.0]])
    grid_t, sol_t = grid_epr(side, box)
    assert grid_t == pytest.approx(8.0, rel=0.01)
    # f_irr = −Q S⁻¹ z = ω (z2, −z1) turns clockwise: E[z × f_irr] = −ω tr S = −2 (S = I/2)
    assert circulation(sol_t) == pytest.approx(-2.0, rel=0.01)
    traj = sample_target(system, trials=64, time=60, seed=2, dt=0.002, record_every=25)
    est = trajectory_estimators(traj.stationary_trials(10.0), 0.05, seed=0)["ar1"]
    assert abs(est["epr"] - 8.0) < 4 * est["stderr"] + 0.03 * 8.0
    assert est["stderr"] < 0.05 * 8.0
    net_side = network_side(ou_model)
    grid_n, sol = grid_epr(net_side, box)
    assert grid_n == pytest.approx(8.0, rel=0.05)
    assert circulation(sol) == pytest.approx(-2.0, rel=0.02)


def test_network_split_by_grid_and_by_samples_agree(ou_model):
    """Φ_s, Φ_a from the grid's f_irr (Σ P f_irrᵀ(D/2)⁻¹f_k) and from stationary samples
    (E[2fᵀD⁻¹f_k + ∇·f_k]) are two independent routes to the same numbers."""
    D = constant_diffusion(ou_model)
    box = np.array([[-4.0, 4.0], [-4.0, 4.0]])
    _, sol = grid_epr(network_side(ou_model), box)
    by_grid = grid_split(ou_model, sol, D)
    # exact stationary samples of the target law N(0, S): the network's law to its e_f ≈ 1e-4
    S = linear.ou_stationary(get_system("ou2d").linear_matrix(), D).S
    z = np.random.default_rng(0).multivariate_normal(np.zeros(2), S, size=(40, 5000))
    by_samples = epr_split_ensemble(ou_model, z, D)
    for k in ("symmetric", "antisymmetric"):
        value, err = by_samples[k]
        assert abs(value - by_grid[k]) < 5 * err + 0.01 * abs(by_grid[k])
    assert by_grid["symmetric"] + by_grid["antisymmetric"] == pytest.approx(sol.epr, rel=0.01)


def test_multiwell_target_is_reversible_and_the_network_is_measured(mw_model):
    """multiwell with u = 0 is a gradient system: its grid e_p is 0 up to O(h⁴); the network's
    e_p and its decoder alignment are finite and reported."""
    system = get_system("multiwell")
    side = target_side(system)
    box = np.array([[-2.5, 2.5], [-2.5, 2.5]])
    _, sol = grid_epr(side, box, n=120)
    assert abs(sol.epr) < 1e-5
    D = constant_diffusion(mw_model)
    net_epr, _ = grid_epr(network_side(mw_model), box, n=120)
    assert np.isfinite(net_epr) and net_epr >= 0
    al = decoder_alignment(mw_model, D)
    assert 0 < al["weighted_abs_cos"] <= 1


@pytest.mark.parametrize("name", ["limit_cycle", "ring_wells"])
def test_nonequilibrium_targets_and_networks_circulate_counter_clockwise(name):
    """limit_cycle and ring_wells: e_p > 0, the network's within 10% of the target's, and the
    stationary current turns counter-clockwise in both (their rotation term is +J z)."""
    system = get_system(name)
    net = fit(name, 192, seed=0, progress=None)
    box = system.domain
    target_epr, sol_t = grid_epr(target_side(system), box, n=160)
    net_epr, sol_n = grid_epr(network_side(net), box, n=160)
    assert target_epr > 0.1
    assert net_epr == pytest.approx(target_epr, rel=0.10)
    assert circulation(sol_t) > 0 and circulation(sol_n) > 0


@pytest.mark.slow
def test_lorenz_fixed_points_ensemble_epr_and_lyapunov():
    """lorenz with 512 neurons: three fixed points for target and network, each network
    eigenvalue within 0.05 + 1% of its modulus of the target's (the wings' +0.094 keeps its sign);
    e_p by the ensemble formula within 10% of each other (same seeds, common random numbers); the
    largest Lyapunov exponent of the network's flow within 5% of the target's, both by the same
    routine (16 starts × 100 time units: standard error ≈ 0.7%, see dynamics.largest_lyapunov)."""
    from ddm_numba import sample_network
    system = get_system("lorenz")
    net = fit("lorenz", 512, seed=0, progress=None)
    target, nets = target_side(system), network_side(net)
    box = system.domain
    fps_t = dynamics.find_fixed_points(target.drift, target.jacobian, box)
    fps_n = dynamics.find_fixed_points(nets.drift, nets.jacobian, box)
    assert len(fps_t) == 3 and len(fps_n) == 3
    pairing = dynamics.pair_fixed_points(fps_t, fps_n)
    assert len(pairing.pairs) == 3
    for pair in pairing.pairs:
        lam, mu = pair.eigenvalue_pairs[:, 0], pair.eigenvalue_pairs[:, 1]
        assert np.all(np.abs(lam - mu) <= 0.05 + 0.01 * np.abs(lam))
        assert pair.kind_agrees and pair.sign_agrees
    wings = [p for p in fps_n if abs(p.z[0]) > 1]
    assert all(0.0 < p.max_real < 0.2 for p in wings)
    # ensemble e_p from stationary samples of each, same seeds
    zt = sample_target(system, trials=32, time=12, seed=1).stationary_trials(4.0)
    zn = sample_network(net, trials=32, time=12, seed=1).stationary_trials(4.0)
    ep_t = estimators.ensemble_epr(target.drift(zt.reshape(-1, 3)).reshape(zt.shape),
                                   target.divergence(zt.reshape(-1, 3)).reshape(zt.shape[:2]),
                                   target.D)
    ep_n = estimators.ensemble_epr(nets.drift(zn.reshape(-1, 3)).reshape(zn.shape),
                                   nets.divergence(zn.reshape(-1, 3)).reshape(zn.shape[:2]),
                                   nets.D)
    assert ep_n[0] == pytest.approx(ep_t[0], rel=0.10)
    z0 = zt[:16, -1]
    ly_t = dynamics.largest_lyapunov(target.drift, target.jacobian, z0, 0.01, 100.0, 10.0)
    ly_n = dynamics.largest_lyapunov(nets.drift, nets.jacobian, z0, 0.01, 100.0, 10.0)
    assert ly_t.mean == pytest.approx(0.9056, rel=0.03)
    assert ly_n.mean == pytest.approx(ly_t.mean, rel=0.05)


def test_analyze_writes_report_and_figures(dw_model, tmp_path):
    out = tmp_path / "an"
    rep = analyze(dw_model, str(out), trials=8, time=30, seed=0, grid=80, progress=None)
    saved = json.loads((out / "report.json").read_text())
    assert saved["model"]["N"] == dw_model.N
    for name in rep["figures"]:
        assert (out / name).stat().st_size > 10_000
    # 1-D: e_p is 0 on a line; the grid's e_p confirms it
    assert abs(rep["irreversibility"]["network"]["grid"]["epr"]) < 1e-10
    assert {p["kind"] for p in rep["fixed_points"]["target"]} == {"stable", "unstable"}
    assert rep["fixed_points"]["pairing"]["all_agree"]
    wells = rep["comparison"]["wells"]
    assert len(wells["centres"]) == 2


def test_analyze_cli(dw_model, tmp_path):
    from click.testing import CliRunner
    from ddm_numba_cli.main import main
    path = str(tmp_path / "dw.npz")
    dw_model.save(path)
    runner = CliRunner()
    res = runner.invoke(main, ["analyze", path, "--out", str(tmp_path / "a"), "--trials", "6",
                               "--time", "20", "--grid", "40", "--no-figures", "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["settings"]["trials"] == 6 and "figures" not in rep
    assert os.path.exists(tmp_path / "a" / "report.json")
    res = runner.invoke(main, ["analyze", path, "--out", str(tmp_path / "b"), "--trials", "6",
                               "--time", "20", "--grid", "40", "--no-figures"])
    assert res.exit_code == 0 and "entropy production" in res.stdout
    assert "fixed points" in res.stdout
    res = runner.invoke(main, ["analyze", str(tmp_path / "missing.npz")])
    assert res.exit_code == 1 and "Error" in res.output and "Traceback" not in res.output
    res = runner.invoke(main, ["analyze", path, "--grid", "3"])
    assert res.exit_code == 2 and "--grid" in res.output


# -- issue 16: lower-bound labels, the grid for state-dependent anisotropic D -------------------

def _minimal_report(irr):
    """The smallest report format_report reads, around given irreversibility entries."""
    return {"model": {"mode": "lowrank", "N": 8, "d": 2, "tau": 1.0, "system": {"name": "x"}},
            "connectivity": {"asymmetry": {"a": 0.5, "eta": 0.0}, "rank": 2,
                             "eig_latent_connectivity": [1.0, 2.0]},
            "settings": {"trials": 8, "time": 20.0, "dt": 0.01, "burn_in": 4.0},
            "irreversibility": irr, "fixed_points": {}}


def test_linear_gaussian_estimators_are_labeled_lower_bounds():
    """AR(1), lagged covariance and the Gaussian KL rate estimate a lower bound of e_p
    (estimators module docstring): report.json says "bound": "lower" for each, and the printed
    table marks them "≥" (and only them: grid and ensemble rows are estimates of e_p itself)."""
    from ddm_numba.analysis.report import format_report, to_json
    # exact samples of the rotation OU B = I + J, D = 2I (S = I): z' = e^{−BΔt} z + N(0, I − e^{−2Δt} I)
    rng = np.random.default_rng(0)
    dt, B = 0.05, np.array([[1.0, -1.0], [1.0, 1.0]])
    A = np.exp(-dt) * np.array([[np.cos(dt), np.sin(dt)], [-np.sin(dt), np.cos(dt)]])
    assert np.allclose(A, expm(-B * dt))
    z = np.empty((8, 400, 2))
    z[:, 0] = rng.standard_normal((8, 2))
    for n in range(399):
        z[:, n + 1] = z[:, n] @ A.T + np.sqrt(1 - np.exp(-2 * dt)) * rng.standard_normal((8, 2))
    est = to_json(trajectory_estimators(z, dt, seed=0))
    est = json.loads(json.dumps(est))                      # what report.json holds
    assert set(est) == {"ar1", "lagged_covariance", "gaussian_kl"}
    for entry in est.values():
        assert entry["bound"] == "lower" and "lower bound" in entry["bound_note"]
        assert np.isfinite(entry["epr"])
    irr = {"target": {"grid": {"epr": 8.0, "epr_richardson": 8.0},
                      "ensemble": {"epr": 8.1, "stderr": 0.1, "power": 40.0},
                      "trajectory": est}}
    table = format_report(_minimal_report(irr))
    for name in ("AR(1) fit", "lagged covariance", "Gaussian KL rate"):
        assert f"≥ {name}" in table
    for name in ("grid (Richardson)", "ensemble"):
        assert f"≥ {name}" not in table and name in table
    assert "lower bound of e_p" in table
    # without the label there is no mark: the mark comes from the field, not from the row name
    for entry in est.values():
        entry["bound"] = "estimate"
    assert "≥" not in format_report(_minimal_report(irr))


class NoneqDoubleWell(System):
    """Issue 16's 2-D nonequilibrium double well with state-dependent diagonal noise:
    f = (z1 − z1³ − 0.5 z2, −z2 + 0.5 z1), g = diag(0.4 + 0.2 tanh z1, 0.3 + 0.1 z2²)."""

    name, d, m = "noneq_double_well", 2, 2
    domain = [[-2.5, 2.5], [-2.5, 2.5]]
    dt, duration = 0.01, 200.0

    def drift(self, z, u=None):
        z1, z2 = z[:, 0], z[:, 1]
        return np.stack([z1 - z1 ** 3 - 0.5 * z2, -z2 + 0.5 * z1], axis=1)

    def diffusion(self, z):
        g = np.zeros((len(z), 2, 2))
        g[:, 0, 0] = 0.4 + 0.2 * np.tanh(z[:, 0])
        g[:, 1, 1] = 0.3 + 0.1 * z[:, 1] ** 2
        return g


# Reference e_p of NoneqDoubleWell on its domain: Richardson from n = 200 and 400 of the 2-D
# state-dependent grid scheme, 0.71672 (Φ_h = 0.70839, 0.71460, 0.71619, 0.71659 at n = 50, 100,
# 200, 400; observed order 1.99; a box of [−3, 3]×[−3.5, 3.5] changes it by 1e-5). The scheme's
# accuracy itself is checked against exact values in test_fokker_planck_aniso.py.
NDW_EPR = 0.71672


def test_state_dependent_2d_grid_on_the_noneq_double_well():
    """The grid now handles state-dependent D in d = 2: at n = 80 and 160 the Richardson value is
    within 0.3 % of the n = 400 reference (measured −0.01 %; Φ_h at n = 160 is −0.16 %)."""
    from ddm_numba.analysis.report import grid_solve
    system = NoneqDoubleWell()
    sol, info = grid_solve(target_side(system), system.domain, 160)
    assert info["diffusion"] == "state-dependent" and "skipped" not in info
    assert info["epr_richardson"] == pytest.approx(NDW_EPR, rel=3e-3)
    assert info["rotation"] in ("clockwise", "counter-clockwise")


@pytest.mark.slow
def test_analyze_uses_the_grid_for_state_dependent_2d_diffusion():
    """`analyze` on a network fitted to NoneqDoubleWell (256 neurons, its latent D_net(z) =
    S(h)S(h)ᵀ is state dependent through R): the grid e_p of target and network (default
    n = 200/100) within 3 % of the reference (measured: target 0.71672, network 0.71636), and the
    trajectory estimators labeled lower bounds and lying below it (measured 0.38 at 16 trials ×
    60; their stderr ≈ 0.03). 1-3 min (fit 22 s; analyze, mostly the parts simulation)."""
    net = fit(NoneqDoubleWell, 256, seed=0, progress=None)
    assert constant_diffusion(net) is None
    rep = analyze(net, None, trials=16, time=60, seed=0, progress=None, system=NoneqDoubleWell())
    for side in ("target", "network"):
        e = rep["irreversibility"][side]
        assert e["grid"]["diffusion"] == "state-dependent"
        assert e["grid"]["epr_richardson"] == pytest.approx(NDW_EPR, rel=0.03)
        assert e["grid"]["epr"] == pytest.approx(NDW_EPR, rel=0.03)
        ar1 = e["trajectory"]["ar1"]
        assert ar1["bound"] == "lower"
        assert ar1["epr"] + 4 * ar1["stderr"] < NDW_EPR


def test_analyze_cli_rejects_bad_lyapunov_options(tmp_path):
    from click.testing import CliRunner
    from ddm_numba_cli.main import main
    runner = CliRunner()
    for option, value in (("--lyapunov-time", "0"), ("--lyapunov-rtol", "0"),
                          ("--lyapunov-rtol", "1.5")):
        res = runner.invoke(main, ["analyze", str(tmp_path / "m.npz"), "--out",
                                   str(tmp_path / "a"), option, value])
        assert res.exit_code == 2 and option in res.output, res.output


@pytest.mark.slow
def test_analyze_passes_the_lyapunov_budget_through():
    """lorenz (a chaotic target, 128 neurons): `analyze(lyapunov_time=60)` integrates at most 60
    time units and says whether 2 % was reached (measured with 16 starts: target 0.903 ± 0.019,
    2.2 %, not reached; network 0.876 ± 0.025); report.json and the table carry the estimate, its
    stderr, the time integrated and the flag. 1-3 min (fit 15 s, numba compile of the parts)."""
    from ddm_numba.analysis.report import format_report
    net = fit("lorenz", 128, seed=0, max_iter=30, progress=None)
    rep = analyze(net, None, trials=16, time=12, seed=0, lyapunov_time=60, lyapunov_rtol=0.02,
                  progress=None)
    assert rep["settings"]["lyapunov"]["budget"] == 60.0
    for side in ("target", "network"):
        ly = rep["lyapunov"][side]
        assert ly["budget"] == 60.0 and ly["rtol"] == 0.02 and ly["time"] <= 60.0 + 1e-9
        assert isinstance(ly["reached"], bool)
        assert ly["reached"] == (ly["stderr"] <= 0.02 * abs(ly["mean"]))
        assert ly["mean"] == pytest.approx(0.9056, rel=0.1)
    table = format_report(rep)
    assert "after 60 time units" in table and "reached" in table
