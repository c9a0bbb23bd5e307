"""Nonequilibrium steady states: does the network produce entropy like its target?

For the nonequilibrium Ornstein–Uhlenbeck process (ou2d; exact e_p = 8) and the Stuart–Landau
limit cycle, fit a rate network, then for target and network side by side:

- the stationary density p and probability current J from the Fokker–Planck equation on a grid
  (ddm_numba.analysis.fokker_planck.solve_stationary);
- the entropy production rate e_p from the grid at n and n/2 cells per axis, Richardson
  extrapolated (e_p = e_p(n) + (e_p(n) − e_p(n/2)) / 3, the scheme being O(h²));
- C₁₂(τ) − C₂₁(τ) from simulations with the same seeds (zero for a reversible process; its sign
  gives the sense of rotation).

Writes DIR/nonequilibrium_SYSTEM.png and DIR/nonequilibrium.json and prints the figures of merit:
e_p target, e_p network and their relative difference (ou2d within 5%, limit_cycle within 10%).

    python examples/nonequilibrium.py [--out-dir DIR] [--quick]
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
from ddm_numba.analysis.compare import cross_correlation_asymmetry  # noqa: E402
from ddm_numba.analysis.fokker_planck import solve_stationary  # noqa: E402
from ddm_numba.analysis.fields import network_side, target_side  # noqa: E402

SYSTEMS = ("ou2d", "limit_cycle")
TOLERANCE = {"ou2d": 0.05, "limit_cycle": 0.10}     # |e_p net − e_p target| / e_p target


def exact_epr(system):
    """Closed-form e_p where there is one (convention D = g gᵀ = σ² I).

    ou2d: f = −B z, B = I − ω J, e_p = 2 ω² / 1 = 8 for ω = 2 (Lyapunov equation; σ drops out).
    limit_cycle: f = −∇V + ω J z with V = −μ r²/2 + r⁴/4 and J z ⊥ ∇V, so p ∝ exp(−2V/σ²)
    (the rotation leaves it stationary) and e_p = E[2 f_irrᵀ D⁻¹ f_irr] = (2 ω²/σ²) E[r²],
    E[r²] by quadrature over r.
    """
    if system.name == "ou2d":
        return 2.0 * system.omega ** 2
    if system.name == "limit_cycle":
        r = np.linspace(0.0, 6.0, 200001)
        logw = -2.0 * (-system.mu * r ** 2 / 2 + r ** 4 / 4) / system.sigma ** 2
        w = r * np.exp(logw - logw.max())
        return 2.0 * system.omega ** 2 / system.sigma ** 2 * np.sum(r ** 2 * w) / np.sum(w)
    return None


def grid_epr(side, box, n):
    """Fine-grid solution and Richardson e_p from n and n/2 cells per axis."""
    D = side.D if side.D is not None else side.diffusion
    coarse = solve_stationary(side.drift, D, box, n // 2)
    fine = solve_stationary(side.drift, D, box, n)
    return fine, fine.epr + (fine.epr - coarse.epr) / 3.0, coarse.epr


def one_system(name, out_dir, quick):
    t0 = time.perf_counter()
    system = get_system(name)
    neurons = 96 if quick else 256
    n_grid = 100 if quick else 200
    trials, duration = (40, 60.0) if quick else (100, 100.0)
    burn = 10.0
    max_lag_time = 6.0

    net = fit(name, neurons, seed=0, progress=None)
    box = np.asarray(system.domain, dtype=float)
    sides = {"target": target_side(system), "network": network_side(net)}
    sols, epr = {}, {}
    for label, side in sides.items():
        fine, rich, coarse = grid_epr(side, box, n_grid)
        sols[label] = fine
        epr[label] = {"richardson": rich, "fine": fine.epr, "coarse": coarse,
                      "boundary_mass": fine.boundary_mass}

    trajs = {"target": sample_target(system, trials=trials, time=duration, seed=1),
             "network": sample_network(net, trials=trials, time=duration, seed=1)}
    dt_rec = float(trajs["target"].t[1] - trajs["target"].t[0])
    max_lag = int(round(max_lag_time / dt_rec))
    lags = np.arange(max_lag + 1) * dt_rec
    ccs = {k: cross_correlation_asymmetry(tr.stationary_trials(burn), max_lag)
           for k, tr in trajs.items()}

    e_t, e_n = epr["target"]["richardson"], epr["network"]["richardson"]
    rel = abs(e_n - e_t) / abs(e_t)
    cc_t, cc_n = ccs["target"], ccs["network"]
    merit = {
        "system": name, "neurons": net.N, "e_f": net.meta["fit"]["e_f"],
        "e_D": net.meta["fit"]["e_D"], "grid": [n_grid // 2, n_grid],
        "epr_target": e_t, "epr_network": e_n, "epr_rel_diff": rel,
        "epr_exact": exact_epr(system), "epr_detail": epr,
        "tolerance": TOLERANCE[name], "within_tolerance": bool(rel <= TOLERANCE[name]),
        "trials": trials, "time": duration, "burn_in": burn,
        "cc_asym_peak_target": float(cc_t[np.argmax(np.abs(cc_t))]),
        "cc_asym_peak_network": float(cc_n[np.argmax(np.abs(cc_n))]),
        "cc_asym_lag_of_peak_target": float(lags[np.argmax(np.abs(cc_t))]),
        "cc_asym_lag_of_peak_network": float(lags[np.argmax(np.abs(cc_n))]),
        "cc_asym_rms_diff": float(np.sqrt(np.mean((cc_n - cc_t) ** 2))),
        "cc_asym_rms_target": float(np.sqrt(np.mean(cc_t ** 2))),
    }
    _figure(os.path.join(out_dir, f"nonequilibrium_{name}.png"), name, net.N, sols, epr, lags,
            ccs)
    merit["seconds"] = time.perf_counter() - t0
    return merit


def _figure(path, name, N, sols, epr, lags, ccs):
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), layout="constrained")
    vmax = max(s.density.max() for s in sols.values())
    for ax, label in zip(axes[:2], ("target", "network")):
        s = sols[label]
        X, Y = s.corners
        im = ax.pcolormesh(X, Y, s.density, cmap="viridis", vmin=0, vmax=vmax, shading="flat")
        P = s.points
        step = max(1, P.shape[0] // 20)
        sl = (slice(step // 2, None, step), slice(step // 2, None, step))
        ax.quiver(P[sl][..., 0], P[sl][..., 1], s.J[sl][..., 0], s.J[sl][..., 1],
                  color="w", scale=None, width=0.004)
        ax.set_title(f"{label}: p and J, e_p = {epr[label]['richardson']:.3f}")
        ax.set_xlabel("z1")
        ax.set_ylabel("z2")
        ax.set_aspect("equal")
    fig.colorbar(im, ax=axes[:2].tolist(), shrink=0.8, label="stationary density")
    ax = axes[2]
    ax.plot(lags, ccs["target"], "k-", lw=2, label="target")
    ax.plot(lags, ccs["network"], "C1--", lw=2, label=f"network (N={N})")
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xlabel("lag τ")
    ax.set_ylabel("C12(τ) − C21(τ)")
    ax.set_title("cross-correlation asymmetry (samples)")
    ax.legend()
    fig.suptitle(f"{name}: stationary density, current and irreversibility")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(out_dir, quick=False):
    """Both systems; writes the figures and nonequilibrium.json to out_dir, returns the merits."""
    os.makedirs(out_dir, exist_ok=True)
    result = {name: one_system(name, out_dir, quick) for name in SYSTEMS}
    result["quick"] = bool(quick)
    with open(os.path.join(out_dir, "nonequilibrium.json"), "w") as fh:
        json.dump(result, fh, indent=1)
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default=".")
    ap.add_argument("--quick", action="store_true", help="reduced sizes (for the tests)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    res = run(args.out_dir, args.quick)
    for name in SYSTEMS:
        r = res[name]
        exact = f" (exact {r['epr_exact']:.4f})" if r["epr_exact"] is not None else ""
        print(f"{name:12s} N={r['neurons']}  e_p target {r['epr_target']:.4f}{exact}  "
              f"network {r['epr_network']:.4f}  rel. diff {100 * r['epr_rel_diff']:.2f}% "
              f"(limit {100 * r['tolerance']:.0f}%: "
              f"{'ok' if r['within_tolerance'] else 'FAILED'})  "
              f"C12-C21 peak target {r['cc_asym_peak_target']:+.3f} at τ="
              f"{r['cc_asym_lag_of_peak_target']:.2f}, network {r['cc_asym_peak_network']:+.3f} "
              f"at τ={r['cc_asym_lag_of_peak_network']:.2f}  [{r['seconds']:.1f} s]")
    print(f"wrote {args.out_dir}/nonequilibrium_*.png and nonequilibrium.json "
          f"in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
