"""Chaos: does a fitted network keep the Lorenz attractor's chaos, seed after seed?

Lorenz (σ_L = 10, ρ = 28, β = 8/3, noise σ = 2), fitted with 512 neurons for each of 10 seeds
(each fit with its own seed). For every seed, network against target:

(a) the network's deterministic latent flow (no noise), RK4 (dt 0.01) for 100 time units from a
    point on the attractor: it stays chaotic if it keeps visiting both wings (x changes lobe,
    with hysteresis, at least MIN_FLOW_SWITCHES times, and still in the second half) and its
    largest Lyapunov exponent is > 0.5;
(b) the largest Lyapunov exponent (ddm_numba.analysis.dynamics.largest_lyapunov, Benettin, from
    8 independent points: the last states of different noisy trials) against the target's
    (≈ 0.906, from 64 such points), within 5%;
(c) noisy sampling (same seeds, so the same noise, the system's dt): per-coordinate stds within
    3%, and lobe switches per unit time (x crossing from < −2 to > 2 or back) within 15%.

Writes DIR/chaos.png (the butterfly, x–z, network vs target for the first seed; per-seed
Lyapunov exponents and switch rates) and DIR/chaos.json (per-seed numbers, pass/fail of each
figure of merit) and prints them.

    python examples/chaos.py [--out-dir DIR] [--quick]
"""
import argparse
import json
import os
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ddm_numba import fit, get_system, sample_network, sample_target  # noqa: E402
from ddm_numba.analysis.dynamics import integrate_flow, largest_lyapunov  # noqa: E402
from ddm_numba.analysis.fields import network_side, target_side  # noqa: E402

SYSTEM = "lorenz"
LYAP_LITERATURE = 0.9056        # σ=10, ρ=28, β=8/3
TOL_LYAP = 0.05                 # |λ net − λ target| / λ target
TOL_STD = 0.03                  # per coordinate
TOL_SWITCH = 0.15               # lobe switches per unit time
CHAOS_MIN_LYAP = 0.5
MIN_FLOW_SWITCHES = 10          # in the 100-unit deterministic run (target: ~90)
HYSTERESIS = 2.0                # lobe = x < −2 or x > 2; in between keeps the last lobe
DT_FLOW = 0.01                  # RK4 step for the deterministic flow and the Lyapunov runs
BURN = 5.0                      # discarded from each noisy trial (the start is off the attractor)


def settings(quick):
    if quick:
        return dict(seeds=2, neurons=256, trials=16, time=30.0, flow_time=50.0,
                    lyap_points=8, lyap_time=25.0, lyap_points_target=32,
                    lyap_time_target=50.0, lyap_transient=5.0)
    return dict(seeds=10, neurons=512, trials=32, time=50.0, flow_time=100.0,
                lyap_points=8, lyap_time=50.0, lyap_points_target=64, lyap_time_target=100.0,
                lyap_transient=5.0)


def lobe_switches(x, h=HYSTERESIS):
    """Number of lobe changes along each row of x (..., T): crossings from x < −h to x > h or
    back; the lobe is undefined until x first leaves [−h, h]."""
    x = np.atleast_2d(np.asarray(x, dtype=float))
    x = x.reshape(-1, x.shape[-1])
    counts = np.zeros(x.shape[0], dtype=int)
    for i, row in enumerate(x):
        lobe = np.where(row > h, 1, np.where(row < -h, -1, 0))
        lobe = lobe[lobe != 0]
        counts[i] = int(np.count_nonzero(np.diff(lobe))) if lobe.size else 0
    return counts


def noisy_stats(traj, burn):
    t = np.asarray(traj.t)
    keep = t >= t[0] + burn
    z = np.asarray(traj.z)[:, keep]                      # (trials, T, 3)
    duration = float(t[keep][-1] - t[keep][0]) * z.shape[0]
    switches = lobe_switches(z[..., 0])
    return {"std": z.reshape(-1, z.shape[-1]).std(axis=0).tolist(),
            "switches": int(switches.sum()), "switch_rate": float(switches.sum() / duration)}


def one_seed(seed, cfg, system, target, lyap_target):
    t0 = time.perf_counter()
    net = fit(SYSTEM, cfg["neurons"], seed=seed, progress=None)
    t_fit = time.perf_counter() - t0
    side = network_side(net)
    trajs = {"target": sample_target(system, trials=cfg["trials"], time=cfg["time"], seed=seed),
             "network": sample_network(net, trials=cfg["trials"], time=cfg["time"], seed=seed)}
    stats = {k: noisy_stats(tr, BURN) for k, tr in trajs.items()}

    # (b) Lyapunov exponent of the network's flow from independent points on its attractor
    z0 = np.asarray(trajs["network"].z)[:cfg["lyap_points"], -1]
    lyap = largest_lyapunov(side.drift, side.jacobian, z0, DT_FLOW, cfg["lyap_time"],
                            cfg["lyap_transient"], seed=seed)
    # (a) the deterministic flow from a point on the (target's) attractor
    n_flow = int(round(cfg["flow_time"] / DT_FLOW))
    start = np.asarray(trajs["target"].z)[:1, -1]
    flow = integrate_flow(side.drift, start, DT_FLOW, n_flow, every=5)[:, 0]   # (T, 3)
    half = flow.shape[0] // 2
    sw_all = int(lobe_switches(flow[:, 0])[0])
    sw_late = int(lobe_switches(flow[half:, 0])[0])
    chaotic = bool(sw_all >= MIN_FLOW_SWITCHES and sw_late >= MIN_FLOW_SWITCHES // 2
                   and lyap.mean > CHAOS_MIN_LYAP and np.all(np.isfinite(flow)))

    std_t, std_n = np.array(stats["target"]["std"]), np.array(stats["network"]["std"])
    std_rel = np.abs(std_n - std_t) / std_t
    r_t, r_n = stats["target"]["switch_rate"], stats["network"]["switch_rate"]
    sw_rel = abs(r_n - r_t) / r_t
    lyap_rel = abs(lyap.mean - lyap_target) / lyap_target
    res = {
        "seed": seed, "neurons": net.N, "e_f": net.meta["fit"]["e_f"],
        "e_D": net.meta["fit"]["e_D"],
        "flow_switches": sw_all, "flow_switches_second_half": sw_late,
        "flow_x_range": [float(flow[:, 0].min()), float(flow[:, 0].max())],
        "chaotic": chaotic,
        "lyap_network": lyap.mean, "lyap_network_stderr": lyap.stderr,
        "lyap_rel_diff": lyap_rel, "lyap_ok": bool(lyap_rel <= TOL_LYAP),
        "std_target": std_t.tolist(), "std_network": std_n.tolist(),
        "std_rel_diff": std_rel.tolist(), "std_ok": bool(np.all(std_rel <= TOL_STD)),
        "switch_rate_target": r_t, "switch_rate_network": r_n,
        "switches_target": stats["target"]["switches"],
        "switches_network": stats["network"]["switches"],
        "switch_rel_diff": sw_rel, "switch_ok": bool(sw_rel <= TOL_SWITCH),
        "seconds_fit": t_fit, "seconds": time.perf_counter() - t0,
    }
    plot = {"flow": flow, "trajs": {k: np.asarray(tr.z) for k, tr in trajs.items()}}
    return res, plot


def _figure(path, per_seed, plot, lyap_target, cfg):
    fig = plt.figure(figsize=(15, 8.5), layout="constrained")
    gs = fig.add_gridspec(2, 3)
    tr = plot["trajs"]
    for j, label in enumerate(("target", "network")):
        ax = fig.add_subplot(gs[0, j])
        z = tr[label][0]
        ax.plot(z[:, 0], z[:, 2], lw=0.4, color="k" if label == "target" else "C1")
        ax.set_title(f"{label}, noisy (seed {per_seed[0]['seed']}, trial 0)")
        ax.set_xlabel("x")
        ax.set_ylabel("z")
        ax.set_xlim(-25, 25)
        ax.set_ylim(-2, 55)
    ax = fig.add_subplot(gs[0, 2])
    f = plot["flow"]
    ax.plot(f[:, 0], f[:, 2], lw=0.4, color="C0")
    ax.set_title(f"network, deterministic flow ({cfg['flow_time']:.0f} time units)")
    ax.set_xlabel("x")
    ax.set_ylabel("z")
    ax.set_xlim(-25, 25)
    ax.set_ylim(-2, 55)

    seeds = [r["seed"] for r in per_seed]
    ax = fig.add_subplot(gs[1, 0])
    ax.errorbar(seeds, [r["lyap_network"] for r in per_seed],
                yerr=[r["lyap_network_stderr"] for r in per_seed], fmt="o", color="C1",
                label="network")
    ax.axhline(lyap_target, color="k", label=f"target {lyap_target:.3f}")
    ax.axhspan(lyap_target * (1 - TOL_LYAP), lyap_target * (1 + TOL_LYAP), color="0.85",
               label="±5%")
    ax.set_xlabel("seed")
    ax.set_xticks(seeds)
    ax.set_ylabel("largest Lyapunov exponent")
    ax.legend(fontsize=8)
    ax = fig.add_subplot(gs[1, 1])
    w = 0.38
    ax.bar(np.array(seeds) - w / 2, [r["switch_rate_target"] for r in per_seed], w, color="k",
           label="target")
    ax.bar(np.array(seeds) + w / 2, [r["switch_rate_network"] for r in per_seed], w,
           color="C1", label="network")
    ax.set_xlabel("seed")
    ax.set_xticks(seeds)
    ax.set_ylabel("lobe switches per unit time (noisy)")
    ax.legend(fontsize=8)
    ax = fig.add_subplot(gs[1, 2])
    ax.axis("off")
    rows = [[str(r["seed"]), "yes" if r["chaotic"] else "NO", str(r["flow_switches"]),
             f"{r['lyap_network']:.3f}", f"{100 * max(r['std_rel_diff']):.1f}",
             f"{100 * r['switch_rel_diff']:.1f}"] for r in per_seed]
    table = ax.table(cellText=rows, colLabels=["seed", "chaotic", "flow sw.", "λ net",
                                               "max std %", "switch %"], loc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    ax.set_title("per seed (network vs target)")
    fig.suptitle(f"lorenz, {per_seed[0]['neurons']} neurons: butterfly and chaos over "
                 f"{len(per_seed)} seeds")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(out_dir, quick=False):
    """All seeds; writes chaos.png and chaos.json to out_dir, returns the merits."""
    t0 = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    cfg = settings(quick)
    system = get_system(SYSTEM)
    target = target_side(system)
    # the target's exponent once, from independent points on its attractor (noisy trials' ends)
    ends = np.asarray(sample_target(system, trials=cfg["lyap_points_target"], time=20.0,
                                    seed=12345).z)[:, -1]
    lt = largest_lyapunov(target.drift, target.jacobian, ends, DT_FLOW, cfg["lyap_time_target"],
                          cfg["lyap_transient"], seed=0)
    per_seed, first_plot = [], None
    for seed in range(cfg["seeds"]):
        res, plot = one_seed(seed, cfg, system, target, lt.mean)
        per_seed.append(res)
        if first_plot is None:
            first_plot = plot
    n = len(per_seed)
    result = {
        "system": SYSTEM, "params": {k: float(v) for k, v in system.params.items()},
        "quick": bool(quick), "settings": cfg, "dt_flow": DT_FLOW, "burn_in": BURN,
        "hysteresis": HYSTERESIS,
        "tolerances": {"lyap": TOL_LYAP, "std": TOL_STD, "switch_rate": TOL_SWITCH,
                       "chaos_min_lyap": CHAOS_MIN_LYAP, "min_flow_switches": MIN_FLOW_SWITCHES},
        "lyap_target": lt.mean, "lyap_target_stderr": lt.stderr,
        "lyap_literature": LYAP_LITERATURE,
        "seeds": n,
        "chaotic_seeds": sum(r["chaotic"] for r in per_seed),
        "lyap_ok_seeds": sum(r["lyap_ok"] for r in per_seed),
        "std_ok_seeds": sum(r["std_ok"] for r in per_seed),
        "switch_ok_seeds": sum(r["switch_ok"] for r in per_seed),
        "per_seed": per_seed,
    }
    result["all_ok"] = bool(all(result[k] == n for k in ("chaotic_seeds", "lyap_ok_seeds",
                                                           "std_ok_seeds", "switch_ok_seeds")))
    _figure(os.path.join(out_dir, "chaos.png"), per_seed, first_plot, lt.mean, cfg)
    result["seconds"] = time.perf_counter() - t0
    with open(os.path.join(out_dir, "chaos.json"), "w") as fh:
        json.dump(result, fh, indent=1)
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default=".")
    ap.add_argument("--quick", action="store_true", help="reduced sizes (for the tests)")
    args = ap.parse_args()
    res = run(args.out_dir, args.quick)
    print(f"lorenz: target λ = {res['lyap_target']:.4f} ± {res['lyap_target_stderr']:.4f} "
          f"(literature {LYAP_LITERATURE})")
    for r in res["per_seed"]:
        std = " ".join(f"{100 * v:.1f}" for v in r["std_rel_diff"])
        print(f"seed {r['seed']:2d} N={r['neurons']} e_f {r['e_f']:.1e}  "
              f"{'chaotic' if r['chaotic'] else 'NOT chaotic'} ({r['flow_switches']} flow "
              f"switches)  λ {r['lyap_network']:.3f} ± {r['lyap_network_stderr']:.3f} "
              f"({100 * r['lyap_rel_diff']:.1f}%)  std diff % {std}  switch rate "
              f"{r['switch_rate_network']:.3f} vs {r['switch_rate_target']:.3f} "
              f"({100 * r['switch_rel_diff']:.1f}%)  [{r['seconds']:.1f} s]")
    n = res["seeds"]
    print(f"chaotic {res['chaotic_seeds']}/{n}, λ within 5% {res['lyap_ok_seeds']}/{n}, "
          f"stds within 3% {res['std_ok_seeds']}/{n}, switch rate within 15% "
          f"{res['switch_ok_seeds']}/{n}: {'all ok' if res['all_ok'] else 'NOT all ok'}")
    print(f"wrote {args.out_dir}/chaos.png and chaos.json in {res['seconds']:.1f} s")


if __name__ == "__main__":
    main()
