"""Constrained circuits: sparse E/I networks that embed the memory examples' dynamics, and a local
rule that learns one online (issue 15).

Two full-connectivity networks of 256 neurons, each with a random connectivity mask of density
--density (default 0.1) and Dale's law (80 % excitatory), every weight outside the mask exactly 0:

- sequential memory (`ring_wells`): sampled without input, network beside target with the same
  noise; the figures of merit of examples/sequential_memory.py: the forward fraction of the
  transitions between memories (|Δ| ≤ 0.05) and the mean dwell time (within 15 %);
- associative memory (`multiwell`): cued from memory to memory by input pulses; the figure of
  merit of examples/associative_memory.py: cue success ≥ 95 % and within 3 points of the target.

And the online rules (`ddm fit --online`, docs/learning.md §6) learning `double_well`: e_f on
held-out visited states against simulated time for RLS and the delta rule, beside the batch
fits' e_f.

Writes constrained_circuits.json and constrained_circuits.png to --out-dir.

    python examples/constrained_circuits.py [--out-dir DIR] [--quick] [--density P]
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import associative_memory as assoc      # noqa: E402  (the memory examples' figures of merit)
import sequential_memory as seq         # noqa: E402

from ddm_numba import fit, get_system, sample_network, sample_target  # noqa: E402
from ddm_numba.online import fit_online  # noqa: E402

FULL = {"neurons": 256, "trials": 60, "time": 200.0, "burn_in": 10.0, "cue_schedules": 6,
        "cue_trials": 20, "online_time": 300.0, "online_trials": 64, "delta_trials": 512}
QUICK = {"neurons": 128, "trials": 20, "time": 80.0, "burn_in": 10.0, "cue_schedules": 2,
         "cue_trials": 8, "online_time": 40.0, "online_trials": 64, "delta_trials": 256}


def constraints(net):
    """What the file holds: masked entries exactly zero, every column with its sign."""
    W = net.W
    n_exc = net.meta["dale"]["n_excitatory"]
    return {"density": net.meta["mask"]["density"],
            "nonzero_fraction": float(np.count_nonzero(W) / W.size),
            "zero_outside_mask": bool(np.count_nonzero(W) <= net.meta["mask"]["allowed"]),
            "columns_keep_sign": bool((W[:, :n_exc] >= 0).all() and (W[:, n_exc:] <= 0).all()),
            "n_excitatory": int(n_exc)}


def sequential(cfg, mask, dale):
    system = get_system("ring_wells")
    net = fit(system, cfg["neurons"], mode="full", seed=0, mask=mask, dale=dale, progress=None)
    wells, _ = seq.stable_wells(system)
    nxt = seq.forward_map(wells)
    gaps = np.linalg.norm(wells[:, None] - wells[None], axis=-1)
    radius = 0.25 * gaps[gaps > 0].min()
    kw = dict(trials=cfg["trials"], time=cfg["time"], seed=1)
    tn, tt = sample_network(net, **kw), sample_target(system, **kw)
    dt = float(tn.t[1] - tn.t[0])
    zn, zt = tn.stationary_trials(cfg["burn_in"]), tt.stationary_trials(cfg["burn_in"])
    trn = seq.transitions(zn, wells, radius, dt, nxt)
    trt = seq.transitions(zt, wells, radius, dt, nxt)
    ff_n, ff_t = trn["forward_fraction"], trt["forward_fraction"]
    dw_n, dw_t = trn["mean_dwell"], trt["mean_dwell"]
    return net, (tn, tt), {
        "fit": {k: net.meta["fit"].get(k) for k in ("e_f", "e_D", "off_manifold_rel")},
        "self_check": (net.meta.get("self_check") or {}).get("verdict"),
        "constraints": constraints(net),
        "forward_fraction": {"network": ff_n, "target": ff_t, "ok": bool(abs(ff_n - ff_t) <= 0.05)},
        "mean_dwell": {"network": dw_n, "target": dw_t,
                       "ok": bool(abs(dw_n - dw_t) <= 0.15 * dw_t)},
        "transitions": {"network": trn["transitions"], "target": trt["transitions"]}}


def associative(cfg, mask, dale):
    system = get_system("multiwell")
    net = fit(system, cfg["neurons"], mode="full", seed=0, mask=mask, dale=dale, progress=None)
    rng = np.random.default_rng(2024)
    n_cues, period, pulse, amp, settle = 10, 10.0, 2.5, 1.5, 1.0
    ok_n, ok_t = [], []
    for s in range(cfg["cue_schedules"]):
        schedule, cued = assoc.cue_schedule(rng, n_cues, period, pulse, amp)
        kw = dict(trials=cfg["cue_trials"], time=5.0 + n_cues * period, seed=100 + s,
                  record_every=5, inputs=schedule)
        ok_n.append(assoc.cue_success(sample_network(net, **kw), schedule, cued, settle))
        ok_t.append(assoc.cue_success(sample_target(system, **kw), schedule, cued, settle))
    ok_n, ok_t = np.concatenate(ok_n), np.concatenate(ok_t)
    s_n, s_t = float(ok_n.mean()), float(ok_t.mean())
    return net, {
        "fit": {k: net.meta["fit"].get(k) for k in ("e_f", "e_D", "off_manifold_rel")},
        "self_check": (net.meta.get("self_check") or {}).get("verdict"),
        "constraints": constraints(net), "cues": int(ok_n.size),
        "success": {"network": s_n, "target": s_t,
                    "ok": bool(s_n >= 0.95 and abs(s_n - s_t) <= 0.03)}}


def online(cfg):
    t0 = time.perf_counter()
    net = fit_online("double_well", 64, seed=0, time_total=cfg["online_time"],
                     trials=cfg["online_trials"], progress=None)
    seconds = time.perf_counter() - t0
    delta = fit_online("double_well", 64, seed=0, time_total=cfg["online_time"],
                       trials=cfg["delta_trials"], rule="delta", progress=None)
    batch = fit("double_well", 64, seed=0, progress=None, self_check_time=0)
    fixed = fit("double_well", 64, seed=0, fixed_embedding=True, progress=None,
                self_check_time=0)
    e_online = net.meta["fit"]["e_f"]
    return net, {"e_f": e_online, "e_D": net.meta["fit"]["e_D"], "seconds": seconds,
                 "simulated_time": cfg["online_time"], "teacher_paths": cfg["online_trials"],
                 "batch_e_f": batch.meta["fit"]["e_f"],
                 "batch_fixed_embedding_e_f": fixed.meta["fit"]["e_f"],
                 "within_2x_of_fixed_embedding_batch": bool(
                     e_online <= 2 * fixed.meta["fit"]["e_f"]),
                 "within_2x_of_batch": bool(e_online <= 2 * batch.meta["fit"]["e_f"]),
                 "curve": net.meta["online"]["curve"],
                 "delta": {"e_f": delta.meta["fit"]["e_f"], "teacher_paths": cfg["delta_trials"],
                           "seconds": delta.meta["training"]["seconds"],
                           "curve": delta.meta["online"]["curve"]}}


def _figure(path, seq_paths, res):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axs = plt.subplots(1, 3, figsize=(15, 4.4))
    tn, tt = seq_paths
    for traj, label, color in [(tt, "target", "0.6"), (tn, "network", "C0")]:
        z = traj.z[0]
        axs[0].plot(z[:, 0], z[:, 1], lw=0.4, color=color, label=label)
    s = res["sequential"]
    axs[0].set_title(f"ring_wells, sparse E/I: forward {s['forward_fraction']['network']:.2f} vs "
                     f"{s['forward_fraction']['target']:.2f}", fontsize=9)
    axs[0].set_aspect("equal")
    axs[0].legend(fontsize=8)
    a = res["associative"]
    axs[1].bar(["network", "target"], [a["success"]["network"], a["success"]["target"]],
               color=["C0", "0.6"])
    axs[1].set_ylim(0, 1.05)
    axs[1].set_title(f"multiwell, sparse E/I: cue success ({a['cues']} cues)", fontsize=9)
    o = res["online"]
    axs[2].loglog(o["curve"]["time"], o["curve"]["e_f"], "o-",
                  label=f"online RLS, {o['teacher_paths']} paths")
    axs[2].loglog(o["delta"]["curve"]["time"], o["delta"]["curve"]["e_f"], "s-", ms=3,
                  label=f"online delta rule, {o['delta']['teacher_paths']} paths")
    axs[2].axhline(o["batch_fixed_embedding_e_f"], color="C1", ls="--",
                   label="batch, same kind of fixed embedding")
    axs[2].axhline(o["batch_e_f"], color="C2", ls=":", label="batch (embedding trained)")
    axs[2].set_xlabel("simulated learning time")
    # the axis spans less than two decades, where matplotlib labels the minor ticks too and
    # they overlap: decade labels only
    axs[2].xaxis.set_minor_formatter(plt.NullFormatter())
    axs[2].set_ylabel("e_f (held-out visited states)")
    axs[2].set_title("double_well learned online (teacher forcing)", fontsize=9)
    axs[2].legend(fontsize=8)
    fig.suptitle(f"constrained circuits: {res['settings']['neurons']} neurons, mask density "
                 f"{res['density']:g}, {res['dale']:.0%} excitatory", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(out_dir, quick=False, density=0.1, dale=0.8):
    cfg = QUICK if quick else FULL
    os.makedirs(out_dir, exist_ok=True)
    t0 = time.perf_counter()
    mask = f"random:p={density:g}"
    _, seq_paths, seq_res = sequential(cfg, mask, dale)
    _, assoc_res = associative(cfg, mask, dale)
    _, online_res = online(cfg)
    res = {"quick": bool(quick), "settings": cfg, "density": density, "dale": dale,
           "sequential": seq_res, "associative": assoc_res, "online": online_res,
           "seconds": time.perf_counter() - t0}
    with open(os.path.join(out_dir, "constrained_circuits.json"), "w") as fh:
        json.dump(res, fh, indent=1)
    _figure(os.path.join(out_dir, "constrained_circuits.png"), seq_paths, res)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out-dir", default="examples/figures")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--density", type=float, default=0.1)
    args = ap.parse_args(argv)
    res = run(args.out_dir, args.quick, args.density)
    for name in ("sequential", "associative"):
        r = res[name]
        print(f"{name}: e_f {r['fit']['e_f']:.3g}, off-manifold {r['fit']['off_manifold_rel']:.3g}"
              f", self-check {r['self_check']}; constraints {r['constraints']}")
    s, a, o = res["sequential"], res["associative"], res["online"]
    print(f"  forward fraction {s['forward_fraction']}; mean dwell {s['mean_dwell']}")
    print(f"  cue success {a['success']}")
    print(f"online RLS: e_f {o['e_f']:.3g} after {o['simulated_time']:g} time units "
          f"({o['seconds']:.0f}s); batch {o['batch_e_f']:.3g}, fixed-embedding batch "
          f"{o['batch_fixed_embedding_e_f']:.3g}; delta rule {o['delta']['e_f']:.3g}")
    print(f"wrote {args.out_dir}/constrained_circuits.json and .png ({res['seconds']:.0f}s)")


if __name__ == "__main__":
    main()
