"""`ddm analyze`: how the network does what its target does (docs/model.md §9).

One call, :func:`analyze`, computes for a model and its target, side by side:

- connectivity: W = W_s + W_a, asymmetry, spectra, decoder alignment, the off-manifold drift;
- irreversibility: e_p in closed form (linear targets), on a Fokker–Planck grid (d ≤ 2; constant
  or state-dependent, anisotropic D), by the ensemble formula from stationary samples (constant D,
  any d) and from trajectories alone (AR(1), lagged covariance, Gaussian KL rate: lower bounds,
  labeled "bound": "lower") with a time-shuffled null; the split e_p = e_p,s + e_p,a along
  W = W_s + W_a;
- fixed points of the latent flow and their stability, paired between target and network; the
  largest Lyapunov exponent (d ≥ 3) to a stated accuracy within a time budget;
- comparison: drift and diffusion errors, distances between stationary laws, autocorrelations,
  hops between wells;
- what the symmetric-only and antisymmetric-only networks do when simulated.

It returns a JSON-able dict; with ``out`` it also writes ``report.json`` and PNG figures there.
"""
import json
import os
import shutil
import tempfile
import sys
import time as _time

import numpy as np

from .._version import __version__
from ..errors import DDMError
from ..network import Network, atomic_write, load_model
from ..backends import DEFAULT_DEVICE
from ..simulate import sample_network, sample_target, target_of
from . import compare, connectivity, dynamics, estimators, fokker_planck, linear
from .connectivity import LatentField
from .fields import (Side, decoder_alignment_or_none, network_side, part_sides,
                     positive_definite, split_W, target_side)
from .render import format_report, to_json

# Side, target_side, network_side (now in fields) and format_report, to_json (now in render) are
# imported here too, where they were defined before
__all__ = ["analyze", "Side", "target_side", "network_side", "format_report", "to_json",
           "connectivity_report", "grid_solve", "circulation", "grid_split",
           "trajectory_estimators", "irreversibility", "fixed_point_report", "lyapunov",
           "comparison", "parts_report", "LYAPUNOV_BUDGET", "LYAPUNOV_RTOL", "LYAPUNOV_BLOCK"]


# -- pieces of the report ------------------------------------------------------------------

def connectivity_report(net, D):
    """The connectivity section of the report; also returns the spectra and the decoder alignment
    (connectivity.decoder_alignment, None where it is not defined) that its figure draws."""
    spectra = connectivity.spectra(net)
    try:
        if net.mode == "lowrank":
            asymmetry = connectivity.asymmetry_lowrank(net.M, net.A)
        else:
            asymmetry = linear.asymmetry(net.W)
    except DDMError:    # W = 0 (e.g. a linear target needs no recurrence): nothing to split
        asymmetry = {"a": None, "eta": None, "norm_W": 0.0, "note": "W = 0"}
    out = {"mode": net.mode, "N": net.N, "d": net.d, "asymmetry": asymmetry,
           "rank": spectra["rank"], "eig_latent_connectivity": spectra["eig_latent"],
           "eig_W": spectra["eig_W"],
           "singular_values": spectra["singular_values"][:2 * net.d + 8],
           "latent_connectivity": spectra["latent_connectivity"]}
    alignment = decoder_alignment_or_none(net, D, asymmetry["norm_W"])
    if alignment is not None:
        out["decoder_alignment"] = {"weighted_abs_cos": alignment["weighted_abs_cos"],
                                    "misalignment": alignment["misalignment"]}
    fit = net.meta.get("fit", {})
    if "off_manifold_rel" in fit:
        out["off_manifold_rel"] = fit["off_manifold_rel"]
    return out, spectra, alignment


def _grid_size(d, grid):
    if grid:
        return int(grid)
    return 400 if d == 1 else 200


def grid_solve(side, box, n):
    """Stationary Fokker–Planck on a grid at n and n/2 cells per axis, Richardson value (d ≤ 2).

    A constant D is passed as a matrix (axis SG scheme, Cholesky map when non-diagonal); a
    state-dependent D as the callable z -> D(z) (K, d, d): the 1-D Itô scheme, or in 2-D the
    8-neighbour lattice scheme for anisotropic D(z) (fokker_planck module docstring). For the
    network, D_net(z) = S(h) S(h)ᵀ + σ_p² P Pᵀ with S = S0 + Σ_j R_j φ_j (Network.latent_diffusion).
    A D that the lattice cannot carry (|D12| too large for the cells) is reported as skipped.
    """
    D = side.D if side.D is not None else side.diffusion
    try:
        coarse = fokker_planck.solve_stationary(side.drift, D, box, n // 2)
        fine = fokker_planck.solve_stationary(side.drift, D, box, n)
    except DDMError as exc:
        if side.D is not None:
            raise
        return None, {"skipped": f"grid solver: {exc}"}
    richardson = fine.epr + (fine.epr - coarse.epr) / 3
    info = {"epr": fine.epr, "epr_coarse": coarse.epr, "epr_richardson": richardson,
            "n": [n // 2, n], "boundary_mass": fine.boundary_mass,
            "residual": fine.residual, "warnings": list(fine.warnings),
            "diffusion": "constant" if side.D is not None else "state-dependent"}
    if box.shape[0] == 2:
        info["circulation"] = circulation(fine)
        if abs(richardson) < 1e-6:     # reversible to the grid's accuracy: the sign means nothing
            info["rotation"] = "nowhere (e_p ≈ 0)"
        else:
            info["rotation"] = ("counter-clockwise" if info["circulation"] > 0 else "clockwise")
    return fine, info


def circulation(sol):
    """∫ (z − z̄) × J dz = E[(z − z̄) × f_irr]: the mean angular momentum of the stationary current
    about the stationary mean z̄ (2-D); > 0 when the current circles counter-clockwise."""
    z = sol.points.reshape(-1, 2)
    area = np.divide(sol.mass, sol.density, out=np.zeros_like(sol.mass),
                     where=sol.density > 0).reshape(-1)
    J = sol.J.reshape(-1, 2)
    zc = z - sol.mass.reshape(-1) @ z
    return float(np.sum((zc[:, 0] * J[:, 1] - zc[:, 1] * J[:, 0]) * area))


def grid_split(net, sol, D):
    """Φ_k = Σ_cells P f_irrᵀ (D/2)⁻¹ f_k on the grid (the split of docs/irreversibility.md §5.3
    from the grid's f_irr)."""
    pts = sol.points.reshape(-1, net.d)
    w = sol.mass.reshape(-1)
    f_irr = sol.f_irr.reshape(-1, net.d)
    Dinv2 = 2 * np.linalg.inv(D)
    out = {}
    for name, part in (("symmetric", "W_s"), ("antisymmetric", "W_a")):
        fk = LatentField(net, part).drift(pts)
        out[name] = float(np.sum(w * np.einsum("ka,ab,kb->k", f_irr, Dinv2, fk)))
    return out


def _headline(result):
    return float(result.epr if hasattr(result, "epr") else result)


def trajectory_estimators(z, dt, seed, batches=8):
    """AR(1) with exact inversion, the lagged-covariance estimator and the Gaussian two-time KL
    rate, from trajectories alone.

    Each comes with a standard error from independent batches of trials (the spread of the
    estimate over ``batches`` groups of trials, / √batches) and with its block-reversal null
    (estimators.shuffled_surrogate: half of the blocks time-reversed, expected e_p 0; what it
    gives is the estimator's finite-sample floor). All three are linear-Gaussian: they estimate
    a lower bound of e_p (estimators module docstring), the e_p of the best linear (OU)
    description of the data, not the system's e_p; each entry carries "bound": "lower".
    """
    out = {}
    n_batches = min(batches, z.shape[0] // 2)
    for name, fn, kw in (("ar1", estimators.ar1_epr, {}),
                         ("lagged_covariance", estimators.lagged_covariance_epr, {"lag": 1}),
                         ("gaussian_kl", estimators.gaussian_kl_rate, {"lag": 1})):
        bound = ({"bound": "lower", "bound_note": estimators.LOWER_BOUND_NOTE}
                 if fn.__name__ in estimators.LOWER_BOUNDS else {"bound": "estimate"})
        try:
            out[name] = {"epr": _headline(fn(z, dt, **kw)), **bound}
        except DDMError as exc:
            out[name] = {"error": str(exc), **bound}
            continue
        if n_batches >= 2:
            try:
                vals = [_headline(fn(part, dt, **kw)) for part in np.array_split(z, n_batches)]
                out[name]["stderr"] = float(np.std(vals, ddof=1) / np.sqrt(n_batches))
            except DDMError:
                pass
        try:
            null = estimators.shuffled_surrogate(fn, z, dt, seed=seed, **kw)
            out[name]["shuffled_null"] = float(null.value)
        except DDMError as exc:
            out[name]["shuffled_null_error"] = str(exc)
    return out


def irreversibility(side, system_or_none, z_stat, dt_rec, box, grid, seed, net=None):
    """e_p of one side by every method that applies; returns (numbers, grid solution or None)."""
    d = z_stat.shape[2]
    out = {}
    if side.D is not None and not positive_definite(side.D):
        # degenerate noise (e.g. a Van der Pol oscillator driven on one coordinate): paths of the
        # time-reversed process are singular to the forward ones, e_p is not finite
        out["note"] = ("D is singular (noise does not reach every direction): the entropy "
                       "production is not defined as a finite rate; skipped")
        return out, None
    B = system_or_none.linear_matrix() if system_or_none is not None else None
    if B is not None and side.D is not None:
        ou = linear.ou_stationary(B, side.D)
        out["closed_form"] = {"epr": float(ou.epr), "S": ou.S, "Q": ou.Q}
    sol = None
    if d <= 2:
        sol, info = grid_solve(side, box, _grid_size(d, grid))
        out["grid"] = info
    if side.D is not None:
        flat = z_stat.reshape(-1, d)
        f = side.drift(flat).reshape(z_stat.shape)
        div = side.divergence(flat).reshape(z_stat.shape[:2])
        val, err = estimators.ensemble_epr(f, div, side.D)
        # Φ = E[2fᵀD⁻¹f] + E[∇·f] is a difference of two terms; Euler–Maruyama samples are off by
        # O(dt) in each, so when Φ is a small fraction of the "power" E[2fᵀD⁻¹f] that bias can
        # dominate (ring_wells at dt = 0.01: 0.95 against the grid's 0.47, power 11)
        power = float(np.mean(2 * np.einsum("...a,ab,...b->...", f, np.linalg.inv(side.D), f)))
        out["ensemble"] = {"epr": float(val), "stderr": float(err), "power": power}
        if abs(val) < 0.2 * power:
            out["ensemble"]["warning"] = (
                f"e_p is {abs(val) / power:.0%} of E[2fᵀD⁻¹f] = {power:.3g}: the O(dt) bias of "
                "Euler–Maruyama samples may dominate; prefer the grid value (d ≤ 2) or use a "
                "smaller --dt")
        if net is not None:
            split = connectivity.epr_split_ensemble(net, z_stat, side.D)
            out["split_ensemble"] = {k: {"epr": v[0], "stderr": v[1]} for k, v in split.items()}
            if sol is not None and d == 2:
                out["split_grid"] = grid_split(net, sol, side.D)
    if d >= 2:
        out["trajectory"] = trajectory_estimators(z_stat, dt_rec, seed)
    else:
        out["note"] = "d = 1 on a line: every stationary 1-D diffusion is reversible, e_p = 0"
    return out, sol


def fixed_point_report(target, net_side, box):
    fps_t = dynamics.find_fixed_points(target.drift, target.jacobian, box) if target else []
    fps_n = dynamics.find_fixed_points(net_side.drift, net_side.jacobian, box)
    out = {"target": [p.to_dict() for p in fps_t], "network": [p.to_dict() for p in fps_n]}
    if target:
        out["pairing"] = dynamics.pair_fixed_points(fps_t, fps_n).to_dict()
    return out, fps_t, fps_n


LYAPUNOV_BUDGET = 1000.0      # default time budget of the Lyapunov exponent (time units)
LYAPUNOV_RTOL = 0.02          # default target: stderr ≤ 2 % of |λ|
LYAPUNOV_BLOCK = 10.0         # batch-means block (≥ a few correlation times of Lorenz, Rössler)


def lyapunov(side, z0, dt, budget, transient, seed, rtol=LYAPUNOV_RTOL):
    """Largest Lyapunov exponent of the deterministic latent flow dz/dt = f(z) (Benettin, RK4),
    integrated until its standard error is ≤ rtol |λ| (or 1e-3 per time unit for λ ≈ 0), at most
    for `budget` time units (dynamics.largest_lyapunov, "To a stated accuracy"). The dict says
    whether the target was reached ("reached") and how long it integrated ("time")."""
    block = min(LYAPUNOV_BLOCK, budget / 10.0)
    return dynamics.largest_lyapunov(side.drift, side.jacobian, z0, dt, budget, transient,
                                     seed=seed, rtol=rtol, block=block).to_dict()


def comparison(system, target, net_side, traj_t, traj_n, burn_in, seed, stable_points):
    zt, zn = traj_t.stationary_trials(burn_in), traj_n.stationary_trials(burn_in)
    d = zt.shape[2]
    rng = np.random.default_rng(seed)
    pts = rng.uniform(system.domain[:, 0], system.domain[:, 1], size=(4096, d))
    out = {"e_f_domain": compare.relative_field_error(net_side.drift(pts), target.drift(pts)),
           "e_D_domain": compare.relative_field_error(net_side.diffusion(pts),
                                                      target.diffusion(pts))}
    out["distances"] = compare.distribution_distances(zn, zt, seed=seed)
    out["moments"] = {"target": compare.moments(zt), "network": compare.moments(zn)}
    dt_rec = float(traj_t.t[1] - traj_t.t[0])
    lags = int(max(2, round(min(5.0, 0.25 * (traj_t.t[-1] - burn_in)) / dt_rec)))
    out["acf_lag_dt"] = dt_rec
    out["acf"] = {"target": compare.autocorrelation(zt, lags),
                  "network": compare.autocorrelation(zn, lags)}
    if d >= 2:
        out["cross_asymmetry"] = {"target": compare.cross_correlation_asymmetry(zt, lags),
                                  "network": compare.cross_correlation_asymmetry(zn, lags)}
    if len(stable_points) >= 2:
        wells = np.array(stable_points)
        gaps = np.linalg.norm(wells[:, None] - wells[None], axis=-1)
        radius = 0.25 * gaps[gaps > 0].min()
        out["wells"] = {"centres": wells,
                        "target": compare.well_transitions(zt, wells, radius, dt_rec),
                        "network": compare.well_transitions(zn, wells, radius, dt_rec)}
    return out


def parts_report(net, trials, time, seed, burn_in, dt, budget=4e9, device=DEFAULT_DEVICE):
    """Simulate the networks with W_s only and with W_a only (full connectivity: they leave the
    manifold) and read their latent state out; their projected drift fields come from LatentField.

    The work is capped at ``budget`` neuron²-steps per part (a full-W step costs N² per trial).
    """
    N = net.N
    steps = int(round(time / dt))
    trials = int(max(4, min(trials, budget / (N * N * max(steps, 1)))))
    steps = int(min(steps, budget / (N * N * trials)))
    t_part = steps * dt
    W = net.W
    out, trajs = {"trials": trials, "time": t_part}, {}
    rng = np.random.default_rng(seed)
    domain = np.asarray(net.meta.get("system", {}).get("domain", [[-1, 1]] * net.d), dtype=float)
    pts = rng.uniform(domain[:, 0], domain[:, 1], size=(2048, net.d))
    for name, Wk in zip(("symmetric", "antisymmetric"), split_W(W)):
        part = Network(net.tau, net.M, net.c, net.b, net.S0, net.R, net.sigma_private, W=Wk,
                       B_in=net.B_in, meta=net.meta)
        F = part.full_drift(part.embed(pts))
        off = np.linalg.norm(part.project_off(F)) / max(np.linalg.norm(F), 1e-300)
        info = {"off_manifold_rel": float(off)}
        try:
            traj = sample_network(part, trials=trials, time=t_part, seed=seed, dt=dt,
                                  device=device)
            zs = traj.stationary_trials(min(burn_in, 0.5 * t_part))
            info["moments"] = compare.moments(zs)
            trajs[name] = traj
        except DDMError as exc:
            info["error"] = str(exc)
        out[name] = info
    return out, trajs


# -- the whole analysis ------------------------------------------------------------------

def analyze(model, out=None, *, trials=100, time=None, seed=0, dt=None, grid=None, figures=True,
            lyapunov_time=None, lyapunov_rtol=None, system=None, progress=sys.stderr,
            device=DEFAULT_DEVICE):
    """Analyse a model (Network or path) and its target; write report.json and figures to out.

    trials, time, seed, dt: the sampling of network and target (same seeds, Euler–Maruyama at the
    system's step unless dt is given). Sample-based numbers (ensemble and trajectory e_p,
    distances, hops) carry the O(dt) bias of Euler–Maruyama: a smaller dt lowers it.
    grid: Fokker–Planck cells per axis (d ≤ 2). lyapunov_time: the time budget of the largest
    Lyapunov exponent (d ≥ 3; default 1000 time units), which integrates until its standard error
    is ≤ lyapunov_rtol |λ| (default 0.02) or the budget is spent; report["lyapunov"][side] has
    "mean", "stderr", "time" (integrated), "reached". system: the target, when the model was fitted to
    a user's own system (a spec such as "my.py:Cubic", or a System). device: where the network
    is sampled ("cpu", "cuda", "auto": a GPU when one is usable). Returns the report as a
    JSON-able dict.
    """
    t_start = _time.perf_counter()
    net = load_model(model) if isinstance(model, (str, os.PathLike)) else model

    def say(msg):
        if progress is not None:
            print(f"[{_time.perf_counter() - t_start:6.1f}s] {msg}", file=progress, flush=True)

    # a built-in target by name, a user's own only when given (files never run code); a model
    # fitted to data with no known system is analyzed alone
    system = None if (system is None and net.meta.get("system", {}).get("kind") == "data") \
        else target_of(net, system)
    d = net.d
    if system is not None and system.d != d:
        raise DDMError(f"the model has d = {d} but its target {system.name} has d = {system.d}")
    box = (system.domain if system is not None
           else np.asarray(net.meta.get("system", {}).get("domain", [[-1, 1]] * d), float))
    time = float(time if time else (system.duration if system is not None else 100.0))
    burn_in = 0.2 * time
    target = target_side(system) if system is not None else None
    net_side = network_side(net)
    report = {"format": "ddm_numba.report/1", "version": __version__,
              "model": {"mode": net.mode, "N": net.N, "d": d, "tau": net.tau,
                        "system": net.meta.get("system", {}), "fit": net.meta.get("fit", {}),
                        "self_check": net.meta.get("self_check")},
              "settings": {"trials": trials, "time": time, "burn_in": burn_in, "seed": seed,
                           "dt": float(dt or net.meta.get("system", {}).get(
                               "dt", system.dt if system is not None else 0.01))}}

    say("connectivity")
    report["connectivity"], spectra, alignment = connectivity_report(net, net_side.D)

    say(f"sampling {trials} trials × {time:g} time units (network and target)")
    dt = report["settings"]["dt"]
    traj_n = sample_network(net, trials=trials, time=time, seed=seed, dt=dt, device=device)
    report["settings"]["device"] = traj_n.meta["device"]
    traj_t = sample_target(system, trials=trials, time=time, seed=seed, dt=dt) if system else None
    dt_rec = float(traj_n.t[1] - traj_n.t[0])

    say("irreversibility")
    irr, grids = {}, {}
    for side, traj, sysobj, netobj in ((target, traj_t, system, None),
                                       (net_side, traj_n, None, net)):
        if side is None:
            continue
        z_stat = traj.stationary_trials(burn_in)
        irr[side.label], grids[side.label] = irreversibility(side, sysobj, z_stat, dt_rec, box,
                                                             grid, seed, net=netobj)
    report["irreversibility"] = irr

    say("fixed points")
    report["fixed_points"], fps_t, fps_n = fixed_point_report(target, net_side, box)

    if d >= 3:
        # RK4 at 5 Euler steps (0.01 for lorenz: < 0.1% bias); up to 64 independent starts (last
        # states of different trials: a step costs about the same for 16 or 64 of them), blocks
        # of 10 time units until stderr ≤ rtol |λ| or the budget is spent
        dt_rk4 = min(0.01, 5 * dt)
        budget = float(lyapunov_time or LYAPUNOV_BUDGET)
        rtol = float(lyapunov_rtol or LYAPUNOV_RTOL)
        if not (np.isfinite(budget) and budget > 0 and np.isfinite(rtol) and rtol > 0):
            raise DDMError(f"lyapunov_time and lyapunov_rtol must be positive, got {budget!r} "
                           f"and {rtol!r}")
        say(f"largest Lyapunov exponent of the deterministic latent flows (to {rtol:.0%}, at "
            f"most {budget:g} time units)")
        z0 = traj_n.stationary_trials(burn_in)[:64, -1]
        report["settings"]["lyapunov"] = {"budget": budget, "rtol": rtol, "dt": dt_rk4,
                                          "starts": int(z0.shape[0])}
        report["lyapunov"] = {side.label: lyapunov(side, z0, dt_rk4, budget, 10.0, seed, rtol)
                              for side in (target, net_side) if side is not None}

    if system is not None:
        say("comparison network vs target")
        stable = [p.z for p in fps_t if p.kind.startswith("stable")]
        report["comparison"] = comparison(system, target, net_side, traj_t, traj_n, burn_in, seed,
                                          stable)

    say("symmetric-only and antisymmetric-only networks")
    report["parts"], part_trajs = parts_report(net, trials, time, seed, burn_in, dt,
                                               device=device)
    report["seconds"] = _time.perf_counter() - t_start

    if out is not None:
        # all or nothing: the figures and report.json are made in a staging folder beside OUT
        # and moved in only when all of them exist, so a failure changes nothing in OUT
        parent = os.path.dirname(os.path.abspath(out))
        stage = tempfile.mkdtemp(prefix=".tmp-analysis-", dir=parent)
        try:
            if figures:
                say("figures")
                from .. import plotting
                W = net.W
                report["figures"] = plotting.analysis_figures(
                    stage, net, report, (spectra, alignment, (W,) + split_W(W)),
                    (target, net_side), grids,
                    {"target": traj_t, "network": traj_n, "parts": part_trajs},
                    {"target": fps_t, "network": fps_n}, burn_in, box, part_sides(net))
            text = json.dumps(to_json(report), indent=1, sort_keys=True)
            atomic_write(os.path.join(stage, "report.json"), lambda fh: fh.write(text.encode()))
            os.makedirs(out, exist_ok=True)
            for name in sorted(os.listdir(stage)):
                os.replace(os.path.join(stage, name), os.path.join(out, name))
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    say("done")
    return to_json(report)
