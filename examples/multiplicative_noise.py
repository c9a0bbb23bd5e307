"""State-dependent (multiplicative) noise: f = −z, g = √(a + b z²), a = 0.2, b = 0.5.

The exact stationary law of the Itô SDE is p(z) ∝ (a + b z²)^(−1−1/b) (heavy tails, ~ |z|^−6 for
b = 0.5), which the network can only reproduce if its diffusion field D_net(z) follows
D(z) = a + b z². Fit a rate network, then compare with the exact law:

- the network's stationary density from samples (histogram) and from the 1-D Fokker–Planck grid
  solver with the network's own drift and state-dependent D_net(z) (callable net.latent_diffusion);
- D_net(z) against D(z) on a grid, and e_D (net.meta["fit"]["e_D"], must be ≤ 0.03);
- the total-variation distance of the sampled density to the exact one, beside the same distance
  for samples of the target itself (the sampling floor; same seeds).

Writes DIR/multiplicative_noise.png and DIR/multiplicative_noise.json and prints the figures.

    python examples/multiplicative_noise.py [--out-dir DIR] [--quick]
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
from ddm_numba.analysis.fokker_planck import solve_stationary  # noqa: E402
from ddm_numba.analysis.fields import network_side  # noqa: E402

E_D_MAX = 0.03


def exact_density(z, a, b):
    """(a + b z²)^(−1−1/b), normalised over the whole line (numerically, on |z| ≤ 2000)."""
    zz = np.linspace(-2000.0, 2000.0, 4_000_001)
    norm = np.trapezoid((a + b * zz ** 2) ** (-1.0 - 1.0 / b), zz)
    return (a + b * np.asarray(z, dtype=float) ** 2) ** (-1.0 - 1.0 / b) / norm


def exact_cdf(edges, a, b):
    """P(z ≤ edge) of the exact law, by cumulative trapezoid on a fine grid from −2000."""
    zz = np.concatenate([np.linspace(-2000.0, edges[0], 200001)[:-1],
                         np.linspace(edges[0], edges[-1], 200001)])
    p = exact_density(zz, a, b)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (p[1:] + p[:-1]) * np.diff(zz))])
    return np.interp(edges, zz, cdf)


def tv_distance(samples, edges, a, b):
    """½ Σ |P̂_bin − P_bin| over the bins of `edges` plus the two tails beyond them."""
    x = np.asarray(samples, dtype=float).ravel()
    counts = np.histogram(x, edges)[0]
    emp = np.concatenate([[np.sum(x < edges[0])], counts, [np.sum(x > edges[-1])]]) / x.size
    cdf = exact_cdf(edges, a, b)
    ex = np.concatenate([[cdf[0]], np.diff(cdf), [1.0 - cdf[-1]]])
    return 0.5 * float(np.sum(np.abs(emp - ex)))


def run(out_dir, quick=False):
    """Fit, sample, solve; writes the figure and the JSON to out_dir, returns the merits."""
    t0 = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    system = get_system("multiplicative")
    a, b = system.a, system.b
    neurons = 96 if quick else 256
    trials, duration = (64, 100.0) if quick else (200, 200.0)
    burn = 10.0
    n_grid = 400

    net = fit(system, neurons, seed=0, progress=None)
    e_D, e_f = net.meta["fit"]["e_D"], net.meta["fit"]["e_f"]

    box = np.asarray(system.domain, dtype=float)          # [[-3, 3]]
    zg = np.linspace(box[0, 0], box[0, 1], 601)
    D_net = net.latent_diffusion(zg[:, None])[:, 0, 0]
    D_true = a + b * zg ** 2
    D_max_rel = float(np.max(np.abs(D_net - D_true) / D_true))

    side = network_side(net)
    sol = solve_stationary(side.drift, net.latent_diffusion, box, n_grid)
    zc = sol.points[:, 0]
    p_exact_c = exact_density(zc, a, b)
    mass_in_box = float(np.trapezoid(exact_density(np.linspace(*box[0], 20001), a, b),
                                 np.linspace(*box[0], 20001)))
    p_exact_box = p_exact_c / mass_in_box                  # the grid has walls at ±3
    grid_L1 = float(np.sum(np.abs(sol.density - p_exact_box)) * sol.h[0])

    net_traj = sample_network(net, trials=trials, time=duration, seed=1)
    tgt_traj = sample_target(system, trials=trials, time=duration, seed=1)
    z_net = net_traj.stationary(burn)[:, 0]
    z_tgt = tgt_traj.stationary(burn)[:, 0]
    edges = np.linspace(-3.0, 3.0, 61)
    tv_net = tv_distance(z_net, edges, a, b)
    tv_tgt = tv_distance(z_tgt, edges, a, b)

    merit = {"system": "multiplicative", "a": a, "b": b, "neurons": net.N, "e_f": e_f,
             "e_D": e_D, "e_D_max": E_D_MAX, "e_D_ok": bool(e_D <= E_D_MAX),
             "D_max_rel_err_on_domain": D_max_rel,
             "tv_network_vs_exact": tv_net, "tv_target_vs_exact": tv_tgt,
             "tv_bins": len(edges) - 1, "grid_L1_network_vs_exact": grid_L1,
             "grid_n": n_grid, "grid_boundary_mass": sol.boundary_mass,
             "exact_mass_outside_box": 1.0 - mass_in_box,
             "var_network": float(np.var(z_net)), "var_target": float(np.var(z_tgt)),
             "var_exact": float(a / (2.0 - b)),   # d E[z²]/dt = −2E[z²] + E[a + b z²] = 0
             "trials": trials, "time": duration, "burn_in": burn, "samples": int(z_net.size),
             "quick": bool(quick)}

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4), layout="constrained")
    ax = axes[0]
    ax.hist(z_net, edges, density=True, color="C1", alpha=0.45, label="network samples")
    ax.plot(zc, p_exact_c, "k-", lw=2, label="exact (a+bz²)^(−1−1/b)")
    ax.plot(zc, sol.density, "C0--", lw=1.5, label="network, Fokker–Planck grid")
    ax.set_xlabel("z")
    ax.set_ylabel("p(z)")
    ax.set_title(f"stationary density (TV to exact: net {tv_net:.3f}, target {tv_tgt:.3f})")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.semilogy(zc, p_exact_c, "k-", lw=2, label="exact")
    ax.semilogy(zc, np.maximum(sol.density, 1e-12), "C0--", lw=1.5, label="network, grid")
    cnt = np.histogram(z_net, edges)[0]
    mid = 0.5 * (edges[1:] + edges[:-1])
    ok = cnt > 0
    ax.semilogy(mid[ok], cnt[ok] / (z_net.size * np.diff(edges)[ok]), "C1o", ms=3,
                label="network samples")
    ax.set_xlabel("z")
    ax.set_title("the same, log scale (heavy tails)")
    ax.legend(fontsize=8)
    ax = axes[2]
    ax.plot(zg, D_true, "k-", lw=2, label="D(z) = a + b z²")
    ax.plot(zg, D_net, "C1--", lw=2, label=f"D_net(z), N={net.N}")
    ax.set_xlabel("z")
    ax.set_ylabel("diffusion")
    ax.set_title(f"diffusion field (e_D = {e_D:.4f})")
    ax.legend(fontsize=8)
    fig.suptitle("multiplicative noise: f = −z, g = √(0.2 + 0.5 z²)")
    fig.savefig(os.path.join(out_dir, "multiplicative_noise.png"), dpi=110)
    plt.close(fig)

    merit["seconds"] = time.perf_counter() - t0
    with open(os.path.join(out_dir, "multiplicative_noise.json"), "w") as fh:
        json.dump(merit, fh, indent=1)
    return merit


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default=".")
    ap.add_argument("--quick", action="store_true", help="reduced sizes (for the tests)")
    args = ap.parse_args()
    r = run(args.out_dir, args.quick)
    print(f"multiplicative N={r['neurons']}  e_f {r['e_f']:.2e}  e_D {r['e_D']:.4f} "
          f"(limit {E_D_MAX}: {'ok' if r['e_D_ok'] else 'FAILED'})  "
          f"max |D_net−D|/D on [−3, 3] {r['D_max_rel_err_on_domain']:.4f}")
    print(f"  TV(samples, exact): network {r['tv_network_vs_exact']:.4f}, "
          f"target {r['tv_target_vs_exact']:.4f} (sampling floor; {r['tv_bins']} bins + tails, "
          f"{r['samples']} samples)")
    print(f"  grid (n={r['grid_n']}) L1(network, exact restricted to the box) "
          f"{r['grid_L1_network_vs_exact']:.4f};  var network {r['var_network']:.4f}, "
          f"target {r['var_target']:.4f}, exact {r['var_exact']:.4f}")
    print(f"wrote {args.out_dir}/multiplicative_noise.png and .json in {r['seconds']:.1f} s")


if __name__ == "__main__":
    main()
