"""Associative memory (application 2): a 256-neuron network fitted to `multiwell` is cued from
memory to memory by input pulses, exactly as its target is.

The target dz = (z - z^3 + u) dt + sigma dB has four memories at (±1, ±1). A cue is a pulse
u = amp·(±1, ±1) toward one memory for `pulse` time units; with amp = 1.5 the drift has a single
fixed point near 1.45·(±1, ±1) while the pulse is on (the wells merge above |u| = 2/(3√3) = 0.385),
so the state is driven there, and after the pulse it relaxes into the cued memory and stays.
Network and target are sampled with the same seeds (same noise) and the same schedule.

Figures of merit:
- success: the fraction of cues after which the nearest memory, `settle` time units after the
  pulse ends, is the cued one (over trials x cues, network vs target);
- spontaneous switching without cues: hops per unit time between the memories' cores
  (`well_transitions`, milestoning), network vs target.

    python examples/associative_memory.py [--out-dir DIR] [--quick]
"""
import argparse
import json
import os
import time as _time

import numpy as np

from ddm_numba import fit, get_system, sample_network, sample_target
from ddm_numba.analysis.compare import well_transitions

WELLS = np.array([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])


def cue_schedule(rng, n_cues, period=10.0, pulse=2.5, amp=1.5, first=5.0):
    """Input pulses [(t0, t1, u)] toward random memories, each different from the previous cue."""
    schedule, cued, prev = [], [], -1
    for k in range(n_cues):
        w = int(rng.choice([i for i in range(4) if i != prev]))
        t0 = first + k * period
        schedule.append((t0, t0 + pulse, (amp * WELLS[w]).tolist()))
        cued.append(w)
        prev = w
    return schedule, np.array(cued)


def nearest_well(z):
    return np.argmin(np.linalg.norm(z[..., None, :] - WELLS, axis=-1), axis=-1)


def cue_success(traj, schedule, cued, settle):
    """(trials, cues) booleans: nearest memory `settle` after each pulse's end is the cued one."""
    t = traj.t
    idx = [int(np.argmin(np.abs(t - (t1 + settle)))) for _, t1, _ in schedule]
    return nearest_well(traj.z[:, idx, :]) == cued[None, :]


def run(out_dir, quick=False):
    t_start = _time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    system = get_system("multiwell")
    neurons = 128 if quick else 256
    net = fit(system, neurons, seed=0, progress=None, **({"max_iter": 100} if quick else {}))
    t_fit = _time.perf_counter() - t_start

    # cued: several schedules (each its own random cue sequence), several trials each
    n_sched, trials_per, n_cues = (4, 5, 10) if quick else (8, 25, 10)
    period, pulse, amp, settle = 10.0, 2.5, 1.5, 1.0
    horizon = 5.0 + n_cues * period
    rng = np.random.default_rng(2024)
    ok_net, ok_tgt, show = [], [], None
    for s in range(n_sched):
        schedule, cued = cue_schedule(rng, n_cues, period, pulse, amp)
        kw = dict(trials=trials_per, time=horizon, seed=100 + s, record_every=5, inputs=schedule)
        tn = sample_network(net, **kw)
        tt = sample_target(system, **kw)
        ok_net.append(cue_success(tn, schedule, cued, settle))
        ok_tgt.append(cue_success(tt, schedule, cued, settle))
        if show is None:
            show = (tn, tt, schedule, cued)
    ok_net, ok_tgt = np.concatenate(ok_net), np.concatenate(ok_tgt)
    n_total = ok_net.size

    # spontaneous: no inputs, long runs, hops between the cores of the four memories
    sp_trials, sp_time = (40, 100.0) if quick else (200, 200.0)
    kw = dict(trials=sp_trials, time=sp_time, seed=7, record_every=5)
    sn, st = sample_network(net, **kw), sample_target(system, **kw)
    burn = 5.0                                   # leave the random initial condition first
    dt_rec = float(sn.t[1] - sn.t[0])
    keep = sn.t >= burn
    radius = 0.5
    hn = well_transitions(sn.z[:, keep], WELLS, radius, dt_rec)
    ht = well_transitions(st.z[:, keep], WELLS, radius, dt_rec)
    rate_n, rate_t = hn["hops_per_time"], ht["hops_per_time"]

    merit = {
        "system": "multiwell", "neurons": neurons, "quick": bool(quick),
        "e_f": net.meta["fit"].get("e_f"), "e_D": net.meta["fit"].get("e_D"),
        "cue": {"amplitude": amp, "pulse": pulse, "period": period, "settle": settle,
                "schedules": n_sched, "trials_per_schedule": trials_per,
                "cues_per_trial": n_cues, "cues_total": int(n_total)},
        "success_network": float(ok_net.mean()), "success_target": float(ok_tgt.mean()),
        "success_agree": float((ok_net == ok_tgt).mean()),
        "spontaneous": {"trials": sp_trials, "time": sp_time, "radius": radius,
                        "hops_network": int(hn["counts"].sum()),
                        "hops_target": int(ht["counts"].sum())},
        "rate_network": rate_n, "rate_target": rate_t,
        "rate_rel_diff": float(abs(rate_n - rate_t) / max(rate_t, 1e-300)),
        "fit_seconds": round(t_fit, 1),
    }
    merit["pass"] = {"success_ge_95": merit["success_network"] >= 0.95,
                     "success_within_3pts": abs(merit["success_network"]
                                                - merit["success_target"]) <= 0.03,
                     "rate_within_20pct": merit["rate_rel_diff"] <= 0.20}

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tn, tt, schedule, cued = show
    fig = plt.figure(figsize=(14, 7.5))
    gs = fig.add_gridspec(2, 3, width_ratios=[1, 1, 1.6])
    cols = ["C0", "C1", "C2", "C3"]
    for i, (tr, lab) in enumerate([(tt, "target"), (tn, "network")]):
        ax = fig.add_subplot(gs[i, 0] if i == 0 else gs[0, 1])
        ax.plot(tr.z[0, :, 0], tr.z[0, :, 1], color="0.4", lw=0.5)
        ax.scatter(WELLS[:, 0], WELLS[:, 1], c=cols, s=120, marker="*", zorder=3)
        for (t0, t1, u), w in zip(schedule, cued):
            k = np.argmin(np.abs(tr.t - (t1 + settle)))
            ax.plot(*tr.z[0, k], "o", color=cols[w], ms=6, mec="k", zorder=4)
        ax.set(xlim=(-2, 2), ylim=(-2, 2), aspect="equal", xlabel="z1", ylabel="z2",
               title=f"{lab}, trial 0 (dots: state after each cue)")
    axs = fig.add_subplot(gs[1, 0:2])
    axs.bar(["success\nnetwork", "success\ntarget"], [ok_net.mean(), ok_tgt.mean()],
            color=["C1", "k"])
    axs.set_ylim(0.8, 1.0)
    axs2 = axs.twinx()
    axs2.bar(["rate\nnetwork", "rate\ntarget"], [rate_n, rate_t], color=["C1", "0.5"])
    axs2.set_ylabel("spontaneous hops / time")
    axs.set_title(f"{n_total} cues: success {ok_net.mean():.3f} vs {ok_tgt.mean():.3f}; "
                  f"hops/time {rate_n:.4f} vs {rate_t:.4f}")
    for i in range(2):
        ax = fig.add_subplot(gs[i, 2])
        for tr, lab, col in [(tt, "target", "k"), (tn, "network", "C1")]:
            ax.plot(tr.t, tr.z[0, :, i], color=col, lw=0.8, label=lab)
        for (t0, t1, u), w in zip(schedule, cued):
            ax.axvspan(t0, t1, color=cols[w], alpha=0.3)
        ax.set(ylabel=f"z{i + 1}", ylim=(-2, 2))
        if i == 0:
            ax.legend(fontsize=8, loc="upper right")
            ax.set_title("trial 0, same noise; shaded: cues (colour = memory)")
        else:
            ax.set_xlabel("t")
    fig.suptitle(f"associative memory (multiwell), N={neurons}: e_f = {merit['e_f']:.2g}")
    fig.tight_layout()
    png = os.path.join(out_dir, "associative_memory.png")
    fig.savefig(png, dpi=100)
    plt.close(fig)
    merit["seconds"] = round(_time.perf_counter() - t_start, 1)
    merit["figure"] = png
    with open(os.path.join(out_dir, "associative_memory.json"), "w") as fh:
        json.dump(merit, fh, indent=1)
    return merit


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default=".")
    ap.add_argument("--quick", action="store_true", help="smaller fit and sampling (tests)")
    args = ap.parse_args()
    print(json.dumps(run(args.out_dir, quick=args.quick), indent=1))


if __name__ == "__main__":
    main()
