"""Application 3: sequential memory (``ring_wells``).

The target f = -grad V + kappa J z has three memories (stable fixed points) on the unit circle and a
nonequilibrium current that turns counter-clockwise, so that with no input the state visits the
memories in order. We fit 256 neurons, sample network and target with the same seeds (same noise
draws) and compare:

- the fraction of forward (counter-clockwise) transitions between memories,
- the mean dwell time in a memory,
- the entropy production rate e_p (stationary Fokker-Planck on a grid, Richardson from two grids).

Then the same network with its antisymmetric part W_a removed: a full-connectivity network with
W = W_s = (W + W^T)/2 and the same M, c, b, S0, R. It leaves the manifold; we read its latent state
z = P (x - c) out and measure the same things from its trajectories.

    python examples/sequential_memory.py [--out-dir DIR] [--quick]
"""
import argparse
import json
import os
import sys
import time

import numpy as np

from ddm_numba import Network, fit, get_system, sample_network, sample_target
from ddm_numba.analysis import compare, dynamics, estimators, fields, render, report
from ddm_numba.errors import DDMError

# settings: full run and quick run (the test)
FULL = {"trials": 100, "time": 200.0, "burn_in": 10.0, "grid": 200,
        "ws_trials": 32, "ws_time": 200.0, "ws_every": 10}
QUICK = {"trials": 30, "time": 100.0, "burn_in": 10.0, "grid": 100,
         "ws_trials": 8, "ws_time": 50.0, "ws_every": 10}
SEED_FIT, SEED_SAMPLE = 0, 1


# -- wells and transitions --------------------------------------------------------------------

def stable_wells(system):
    """The target's stable fixed points (the memories), sorted by angle."""
    side = fields.target_side(system)
    fps = dynamics.find_fixed_points(side.drift, side.jacobian, system.domain)
    wells = np.array([p.z for p in fps if p.kind == "stable"])
    angles = np.arctan2(wells[:, 1], wells[:, 0])
    order = np.argsort(angles)
    return wells[order], [p.to_dict() for p in fps]


def forward_map(wells):
    """nxt[i] = the well next counter-clockwise from well i."""
    ang = np.arctan2(wells[:, 1], wells[:, 0])
    n = len(wells)
    nxt = np.empty(n, dtype=int)
    for i in range(n):
        ccw = np.mod(ang - ang[i], 2 * np.pi)
        ccw[i] = np.inf
        nxt[i] = int(np.argmin(ccw))
    return nxt


def forward_fraction(counts, nxt):
    """Fraction of the transitions i -> j (i != j) that go to the next well counter-clockwise."""
    counts = np.asarray(counts)
    total = counts.sum() - np.trace(counts)
    if total == 0:
        return float("nan"), 0
    fwd = sum(counts[i, nxt[i]] for i in range(len(nxt)))
    return float(fwd / total), int(total)


def transitions(z, wells, radius, dt, nxt):
    w = compare.well_transitions(z, wells, radius, dt)
    frac, n = forward_fraction(w["counts"], nxt)
    dwell = w["mean_dwell"]
    return {"counts": w["counts"].tolist(), "transitions": n, "forward_fraction": frac,
            "mean_dwell_per_well": [float(x) for x in dwell],
            "mean_dwell": float(np.nanmean(dwell)) if np.isfinite(dwell).any() else float("nan"),
            "hops_per_time": w["hops_per_time"]}


def sector_transitions(z, wells, nxt):
    """Hops between angular sectors (nearest well by angle), for a state off the ring."""
    wa = np.arctan2(wells[:, 1], wells[:, 0])
    a = np.arctan2(z[..., 1], z[..., 0])
    sec = np.argmin(np.abs(np.angle(np.exp(1j * (a[..., None] - wa)))), axis=-1)
    n = len(wells)
    counts = np.zeros((n, n), dtype=int)
    for row in sec:
        ch = np.flatnonzero(np.diff(row)) + 1
        prev = row[0]
        for k in ch:
            counts[prev, row[k]] += 1
            prev = row[k]
    frac, total = forward_fraction(counts, nxt)
    return {"counts": counts.tolist(), "transitions": total, "forward_fraction": frac}, sec


def lagcov_epr(z, dt, lag, per_trial_mean=False):
    """Lagged-covariance (OU) e_p from trajectories; per_trial_mean removes each trial's own mean
    first (for a network frozen in different attractors: the fluctuations about each)."""
    if per_trial_mean:
        z = z - z.mean(axis=1, keepdims=True)
    try:
        r = estimators.lagged_covariance_epr(z, dt, lag=lag)
        return {"epr": float(r.epr), "lag_time": float(r.tau),
                "asymmetry_12": float(r.asymmetry[0, 1])}
    except DDMError as exc:
        return {"epr": None, "error": str(exc)}


def grid_epr(side, box, n):
    _, info = report.grid_solve(side, box, n)
    return {"epr_richardson": info["epr_richardson"], "epr_fine": info["epr"],
            "epr_coarse": info["epr_coarse"], "n": info["n"],
            "rotation": info.get("rotation"), "circulation": info.get("circulation")}


# -- the whole example ------------------------------------------------------------------------

def run(out_dir, quick=False):
    cfg = QUICK if quick else FULL
    t_start = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    system = get_system("ring_wells")
    box = np.asarray(system.domain, dtype=float)

    net = fit("ring_wells", 256, seed=SEED_FIT, progress=None)
    t_fit = time.perf_counter() - t_start

    wells, fps = stable_wells(system)
    nxt = forward_map(wells)
    gaps = np.linalg.norm(wells[:, None] - wells[None], axis=-1)
    radius = 0.25 * gaps[gaps > 0].min()

    tn = sample_network(net, trials=cfg["trials"], time=cfg["time"], seed=SEED_SAMPLE)
    tt = sample_target(system, trials=cfg["trials"], time=cfg["time"], seed=SEED_SAMPLE)
    dt = float(tn.t[1] - tn.t[0])
    zn, zt = tn.stationary_trials(cfg["burn_in"]), tt.stationary_trials(cfg["burn_in"])
    path_rms = float(np.sqrt(np.mean(np.sum((zn - zt) ** 2, axis=-1))))
    trans_n = transitions(zn, wells, radius, dt, nxt)
    trans_t = transitions(zt, wells, radius, dt, nxt)
    # lagged covariance on every 10th record (tau = 0.1): the same OU-fit estimator on all three
    lagcov_n = lagcov_epr(zn[:, ::10], 10 * dt, 1)
    lagcov_t = lagcov_epr(zt[:, ::10], 10 * dt, 1)
    t_sample = time.perf_counter() - t_start - t_fit

    side_t = fields.target_side(system)
    side_n = fields.network_side(net)
    ep_t = grid_epr(side_t, box, cfg["grid"])
    ep_n = grid_epr(side_n, box, cfg["grid"])
    t_grid = time.perf_counter() - t_start - t_fit - t_sample

    # -- the symmetric part alone -------------------------------------------------------------
    W = net.W
    Ws = 0.5 * (W + W.T)
    asym = float(np.linalg.norm(W - Ws) / np.linalg.norm(W))
    ws_net = Network(net.tau, net.M, net.c, net.b, net.S0, net.R, net.sigma_private, W=Ws,
                     meta=net.meta)
    tw = sample_network(ws_net, trials=cfg["ws_trials"], time=cfg["ws_time"], seed=SEED_SAMPLE,
                        record_every=cfg["ws_every"])
    dtw = float(tw.t[1] - tw.t[0])
    zw = tw.stationary_trials(cfg["burn_in"])
    radius_w = np.linalg.norm(zw, axis=-1)
    trans_w = transitions(zw, wells, radius, dtw, nxt)
    sect_w, _ = sector_transitions(zw, wells, nxt)
    ang_w = np.degrees(np.arctan2(zw[:, -1, 1], zw[:, -1, 0]))
    ang_drift = np.degrees(np.abs(np.angle(np.exp(1j * (
        np.arctan2(zw[:, -1, 1], zw[:, -1, 0]) - np.arctan2(zw[:, 0, 1], zw[:, 0, 0]))))))
    # the W_s network sits in one attractor per trial: e_p of the fluctuations about it
    lagcov_w = lagcov_epr(zw, dtw, 1, per_trial_mean=True)
    try:
        zd = zw - zw.mean(axis=1, keepdims=True)
        null = estimators.shuffled_surrogate(estimators.lagged_covariance_epr, zd, dtw, seed=0,
                                             lag=1)
        null_w = {"epr": float(null.value), "stderr": float(null.stderr)}
    except DDMError as exc:         # the null is only a guide; say why it is missing
        null_w = {"error": str(exc)}
    F = ws_net.full_drift(ws_net.embed(zt[:, ::100].reshape(-1, 2)))
    off = float(np.linalg.norm(ws_net.project_off(F)) / np.linalg.norm(F))
    ws_side = fields.network_side(net, part="W_s")
    ws_fps = dynamics.find_fixed_points(ws_side.drift, ws_side.jacobian, box)
    t_ws = time.perf_counter() - t_start - t_fit - t_sample - t_grid

    ff_n, ff_t = trans_n["forward_fraction"], trans_t["forward_fraction"]
    dw_n, dw_t = trans_n["mean_dwell"], trans_t["mean_dwell"]
    e_n, e_t = ep_n["epr_richardson"], ep_t["epr_richardson"]
    merit = {
        "forward_fraction": {"network": ff_n, "target": ff_t, "abs_diff": abs(ff_n - ff_t),
                             "ok": bool(abs(ff_n - ff_t) <= 0.05)},
        "mean_dwell": {"network": dw_n, "target": dw_t, "rel_diff": abs(dw_n - dw_t) / dw_t,
                       "ok": bool(abs(dw_n - dw_t) <= 0.15 * dw_t)},
        "epr_grid": {"network": e_n, "target": e_t, "rel_diff": abs(e_n - e_t) / abs(e_t),
                     "ok": bool(abs(e_n - e_t) <= 0.10 * abs(e_t))},
    }
    result = {
        "system": "ring_wells", "quick": bool(quick), "settings": cfg, "neurons": net.N,
        "fit": net.meta.get("fit", {}),
        "wells": wells.tolist(), "well_angles_deg": np.degrees(
            np.arctan2(wells[:, 1], wells[:, 0])).tolist(),
        "next_ccw": nxt.tolist(), "core_radius": float(radius),
        "fixed_points_target": [{"z": list(map(float, p["z"])), "kind": p["kind"]}
                                for p in fps] if fps and "z" in fps[0] else None,
        "figures_of_merit": merit,
        "path_rms_network_minus_target": path_rms,
        "transitions": {"network": trans_n, "target": trans_t},
        "epr": {"grid": {"network": ep_n, "target": ep_t},
                "lagged_covariance": {"network": lagcov_n, "target": lagcov_t}},
        "W_s_only": {
            "asymmetry_norm_ratio": asym, "trials": cfg["ws_trials"], "time": cfg["ws_time"],
            "off_manifold_rel_on_target_samples": off,
            "latent_radius_percentiles_1_50_99": np.percentile(radius_w, [1, 50, 99]).tolist(),
            "final_angles_deg": ang_w.tolist(),
            "max_angle_change_deg": float(ang_drift.max()),
            "core_transitions": trans_w, "sector_transitions": sect_w,
            "never_hops": bool(sect_w["transitions"] == 0 and trans_w["transitions"] == 0),
            "lagged_covariance_per_trial_mean": lagcov_w, "reversal_null": null_w,
            "projected_field_fixed_points": [p.kind for p in ws_fps],
        },
        "timing_s": {"fit": t_fit, "sample": t_sample, "grid": t_grid, "W_s": t_ws},
    }
    _figure(os.path.join(out_dir, "sequential_memory.png"), tn, tt, tw, wells, trans_n, trans_t,
            sect_w, cfg, merit)
    result["timing_s"]["total"] = time.perf_counter() - t_start
    with open(os.path.join(out_dir, "sequential_memory.json"), "w") as fh:
        json.dump(render.to_json(result), fh, indent=1)
    return result


# -- figure -----------------------------------------------------------------------------------

def _figure(path, tn, tt, tw, wells, trans_n, trans_t, sect_w, cfg, merit):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 3, figsize=(15, 9.5))
    k1 = int(round(min(60.0, cfg["time"]) / (tn.t[1] - tn.t[0])))
    circ = np.linspace(0, 2 * np.pi, 200)
    for traj, lab, col, lw, ls in ((tt, "target", "C1", 2.0, "-"), (tn, "network", "C0", 0.5, "-")):
        ax[0, 0].plot(traj.z[0, :k1, 0], traj.z[0, :k1, 1], lw=lw, ls=ls, color=col, alpha=0.8,
                      label=f"{lab} (trial 0, t ≤ {tn.t[k1 - 1]:.0f})")
    ax[0, 0].plot(np.cos(circ), np.sin(circ), "k:", lw=0.8)
    ax[0, 0].plot(wells[:, 0], wells[:, 1], "k*", ms=14, label="memories (stable f.p.)")
    for i, w in enumerate(wells):
        ax[0, 0].annotate(str(i), w * 1.25, ha="center", va="center", fontsize=12)
    ax[0, 0].set_aspect("equal")
    ax[0, 0].set_xlim(-1.8, 1.8)
    ax[0, 0].set_ylim(-1.8, 1.8)
    ax[0, 0].set_title("trajectory on the ring (same noise)")
    ax[0, 0].legend(fontsize=7, loc="lower left")

    wa = np.degrees(np.arctan2(wells[:, 1], wells[:, 0]))
    for traj, lab, col, lw in ((tt, "target", "C1", 2.0), (tn, "network", "C0", 0.6)):
        ang = np.degrees(np.unwrap(np.arctan2(traj.z[0, :, 1], traj.z[0, :, 0])))
        ax[0, 1].plot(traj.t, ang, color=col, lw=lw, label=lab)
    ax[0, 1].set_xlabel("t")
    ax[0, 1].set_ylabel("unwrapped angle (deg)")
    ax[0, 1].set_title("angle, trial 0: steps of 120° = memories visited in order (ccw)")
    ax[0, 1].legend(fontsize=8)

    for k in range(tw.z.shape[0]):
        ang = np.degrees(np.arctan2(tw.z[k, :, 1], tw.z[k, :, 0]))
        ax[0, 2].plot(tw.t, ang, lw=0.7)
    for a in wa:
        ax[0, 2].axhline(a, color="k", ls=":", lw=0.8)
    r50 = np.median(np.linalg.norm(tw.z[:, -1], axis=-1))
    ax[0, 2].set_xlabel("t")
    ax[0, 2].set_ylabel("angle of read-out z (deg)")
    ax[0, 2].set_title(f"W_s only ({tw.z.shape[0]} trials): leaves the manifold,\n"
                       f"|z| ≈ {r50:.0f}, frozen (dotted: memory angles)", fontsize=10)

    mats = ((trans_n, "network"), (trans_t, "target"), (sect_w, "W_s only (angular sectors)"))
    for a, (tr, lab) in zip(ax[1], mats):
        C = np.asarray(tr["counts"])
        im = a.imshow(C, cmap="Blues", vmin=0, vmax=max(int(C.max()), 1))
        for i in range(C.shape[0]):
            for j in range(C.shape[1]):
                a.text(j, i, str(C[i, j]), ha="center", va="center",
                       color="w" if C[i, j] > 0.5 * max(C.max(), 1) else "k")
        a.set_xticks(range(len(C)))
        a.set_yticks(range(len(C)))
        a.set_xlabel("to well")
        a.set_ylabel("from well")
        ff = tr["forward_fraction"]
        a.set_title(f"{lab}: {tr['transitions']} hops, forward "
                    f"{'—' if not np.isfinite(ff) else f'{ff:.3f}'}", fontsize=10)
        fig.colorbar(im, ax=a, fraction=0.046)
    m = merit
    fig.suptitle(
        f"ring_wells, 256 neurons: forward fraction {m['forward_fraction']['network']:.3f} vs "
        f"{m['forward_fraction']['target']:.3f}; mean dwell {m['mean_dwell']['network']:.2f} vs "
        f"{m['mean_dwell']['target']:.2f}; e_p (grid) {m['epr_grid']['network']:.3f} vs "
        f"{m['epr_grid']['target']:.3f} (network vs target)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _print(res):
    m = res["figures_of_merit"]
    print("ring_wells (sequential memory), 256 neurons; network vs target, same noise")
    print(f"  wells (angles, deg): {np.round(res['well_angles_deg'], 1).tolist()}  "
          f"next ccw: {res['next_ccw']}")
    print(f"  forward fraction  {m['forward_fraction']['network']:.4f} vs "
          f"{m['forward_fraction']['target']:.4f}  (|diff| {m['forward_fraction']['abs_diff']:.4f}"
          f" <= 0.05: {m['forward_fraction']['ok']})")
    print(f"  transitions       {res['transitions']['network']['transitions']} vs "
          f"{res['transitions']['target']['transitions']}")
    print(f"  mean dwell        {m['mean_dwell']['network']:.3f} vs {m['mean_dwell']['target']:.3f}"
          f"  (rel {m['mean_dwell']['rel_diff']:.3f} <= 0.15: {m['mean_dwell']['ok']})")
    print(f"  e_p grid (Rich.)  {m['epr_grid']['network']:.4f} vs {m['epr_grid']['target']:.4f}"
          f"  (rel {m['epr_grid']['rel_diff']:.4f} <= 0.10: {m['epr_grid']['ok']})")
    print(f"  rms |z_net - z_target| at equal times (same noise): "
          f"{res['path_rms_network_minus_target']:.4f}")
    lc = res["epr"]["lagged_covariance"]
    print(f"  e_p lagged cov.   {lc['network'].get('epr')} vs {lc['target'].get('epr')}"
          "  (OU fit, tau = 0.1: a different, model-based quantity)")
    w = res["W_s_only"]
    print(f"  W_s only (||W_a||/||W|| = {w['asymmetry_norm_ratio']:.3f}):")
    print(f"    off-manifold drift fraction {w['off_manifold_rel_on_target_samples']:.3f}; "
          f"|z| percentiles 1/50/99: {np.round(w['latent_radius_percentiles_1_50_99'], 1)}")
    print(f"    hops: {w['core_transitions']['transitions']} between memory cores, "
          f"{w['sector_transitions']['transitions']} between angular sectors; "
          f"forward fraction {w['sector_transitions']['forward_fraction']}"
          f"{'  (it never hops)' if w['never_hops'] else ''}")
    print(f"    largest angle change of a trial: {w['max_angle_change_deg']:.2f} deg")
    print(f"    e_p lagged cov. (per-trial mean removed): "
          f"{w['lagged_covariance_per_trial_mean'].get('epr')}  null: {w['reversal_null']}")
    print(f"  time: {res['timing_s']}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default=".")
    ap.add_argument("--quick", action="store_true", help="fewer trials, coarser grid (tests)")
    args = ap.parse_args(argv)
    res = run(args.out_dir, quick=args.quick)
    _print(res)
    print(f"wrote {os.path.join(args.out_dir, 'sequential_memory.json')} and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
