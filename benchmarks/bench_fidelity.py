"""Fidelity where the dynamics lives: is a fitted network the target, on the target's own states?

    python benchmarks/bench_fidelity.py [--systems NAME,...] [--neurons 256] [--trials 100]
                                        [--time 1000] [--json out.json]

For every built-in system, the Rössler system and two coupled 2-D double wells (4-D), both
written here as a user would, with the package's default fit options:

- the target is simulated twice, independently (seeds A and B), from states already on its
  attractor (the last states of a burn-in run), and the network once (seed C, from the same
  states mapped onto its manifold);
- e_f on the stationary states of run A (the held-out e_f the fit reports is on the uniform box);
- per coordinate: the relative error of the network's stationary std against run A's, and the
  total variation between network and target marginals (60 bins over the pooled 0.5–99.5 %
  range) against the *floor*: the same distance between the two target runs A and B. A ratio
  TV / floor near 1 is as good as sampling can tell; the fidelity issue asks for at most 3;
- the network trials that leave the box by more than half its width, and those that stay out
  there for more than 10 % of their time (none may: a network that settles on an attractor the
  target lacks), and the fit's own self-check verdict.

Only the package's public API is used. Prints a markdown table; --json keeps everything.
"""
import argparse
import json
import sys
import time

import numpy as np

from ddm_numba import System, fit, get_system, sample_network, sample_target
from ddm_numba.matching import relative_error


class Rossler(System):
    name, d, m = "rossler", 3, 3
    domain = [[-12.0, 15.0], [-14.0, 10.0], [-1.0, 35.0]]
    dt, duration = 0.01, 1000.0
    params = {"a": 0.2, "b": 0.2, "c": 5.7, "s1": 0.1, "s2": 0.1, "s3": 0.05}
    constant_diffusion = True
    description = "Rössler attractor with additive noise"

    def drift(self, z, u=None):
        x, y, w = z[:, 0], z[:, 1], z[:, 2]
        return np.column_stack([-y - w, x + self.a * y, self.b + w * (x - self.c)])

    def diffusion(self, z):
        g = np.zeros((len(z), 3, 3))
        g[:, 0, 0], g[:, 1, 1], g[:, 2, 2] = self.s1, self.s2, self.s3
        return g


class CoupledWells(System):
    """Two 2-D double wells, weakly coupled: f_i = z_i − z_i³ + κ (z_j − z_i) in each pair."""
    name, d, m = "coupled_wells", 4, 4
    domain = [[-2.0, 2.0]] * 4
    dt, duration = 0.01, 500.0
    params = {"kappa": 0.2, "sigma": 0.5}
    constant_diffusion = True

    def drift(self, z, u=None):
        f = z - z ** 3
        k = self.kappa
        f[:, 0] += k * (z[:, 2] - z[:, 0])
        f[:, 2] += k * (z[:, 0] - z[:, 2])
        f[:, 1] += k * (z[:, 3] - z[:, 1])
        f[:, 3] += k * (z[:, 1] - z[:, 3])
        return f

    def diffusion(self, z):
        g = np.zeros((len(z), 4, 4))
        for a in range(4):
            g[:, a, a] = self.sigma
        return g


SYSTEMS = ["double_well", "ou2d", "limit_cycle", "lorenz", "multiwell", "ring_wells",
           "multiplicative", "rossler", "coupled_wells"]


def make(name):
    return {"rossler": Rossler, "coupled_wells": CoupledWells}.get(name, name)


def on_attractor(system, trials, seed):
    """States on the target's attractor: the ends of a burn-in run started near its centre (box
    corners can escape for systems such as Rössler)."""
    box = system.domain
    centre = box.mean(axis=1)
    rng = np.random.default_rng(seed)
    z0 = centre + 0.05 * (box[:, 1] - box[:, 0]) * rng.standard_normal((trials, system.d))
    burn = sample_target(system, trials=trials, time=min(100.0, system.duration), seed=seed,
                         z0=z0)
    return burn.z[:, -1]


def tv_marginals(a, b, lo, hi, bins=60):
    out = []
    for k in range(a.shape[1]):
        edges = np.linspace(lo[k], hi[k], bins + 1)
        pa = np.histogram(np.clip(a[:, k], lo[k], hi[k]), edges)[0] / len(a)
        pb = np.histogram(np.clip(b[:, k], lo[k], hi[k]), edges)[0] / len(b)
        out.append(0.5 * float(np.abs(pa - pb).sum()))
    return np.array(out)


def measure(name, neurons, trials, horizon, seed=0):
    system = get_system(make(name))
    t0 = time.perf_counter()
    net = fit(system, neurons, seed=seed, progress=None)
    fit_s = time.perf_counter() - t0
    z0 = on_attractor(system, trials, seed + 100)
    kw = dict(trials=trials, time=horizon, z0=z0)
    burn = 0.1 * horizon
    ref_a = sample_target(system, seed=seed + 1, **kw).stationary(burn)
    ref_b = sample_target(system, seed=seed + 2, **kw).stationary(burn)
    figs = net.meta["fit"]
    check = net.meta.get("self_check", {})
    row = {"system": name, "N": neurons, "fit_s": fit_s, "e_f_held_out": figs["e_f"],
           "e_f_box": figs.get("e_f_box", figs["e_f"]), "self_check": check.get("verdict"),
           "self_check_tv_ratio": check.get("tv_ratio_max"),
           "self_check_problems": check.get("problems")}
    try:
        net_traj = sample_network(net, seed=seed + 3, **kw)
        zn = net_traj.stationary(burn)
    except Exception as exc:        # a network that blows up is a result, not a crash
        row["error"] = str(exc)
        return row
    pts = ref_a[np.random.default_rng(0).choice(len(ref_a), min(20000, len(ref_a)),
                                                 replace=False)]
    u = np.zeros((len(pts), system.p)) if system.p else None
    row["e_f_stationary"] = relative_error(net.latent_drift(pts, u), system.drift(pts, u))
    row["std_rel_err"] = (zn.std(axis=0) / ref_a.std(axis=0) - 1).tolist()
    pooled = np.concatenate([ref_a, ref_b, zn])
    lo, hi = np.quantile(pooled, 0.005, axis=0), np.quantile(pooled, 0.995, axis=0)
    tv = tv_marginals(zn, ref_a, lo, hi)
    floor = tv_marginals(ref_b, ref_a, lo, hi)
    row["tv"], row["tv_floor"] = tv.tolist(), floor.tolist()
    row["tv_over_floor"] = (tv / np.maximum(floor, 1e-12)).tolist()
    lo_b, hi_b = system.domain[:, 0], system.domain[:, 1]
    w = 0.5 * (hi_b - lo_b)

    def outside(runs):     # per trial: the share of records beyond half a box width outside
        return (~np.all((runs >= lo_b - w) & (runs <= hi_b + w), axis=2)).mean(axis=1)

    row["network_trials_leaving_box"] = int((outside(net_traj.z) > 0).sum())
    row["network_trials_settled_outside"] = int((outside(net_traj.z) > 0.1).sum())
    row["max_abs_z_network"] = float(np.abs(zn).max())
    row["max_abs_z_target"] = float(np.abs(np.concatenate([ref_a, ref_b])).max())
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--neurons", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--time", type=float, default=0.0,
                    help="time per trial (0: the system's suggested duration, at most 1000)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    print("| system | N | fit s | e_f box | e_f held-out | e_f stationary | max std err | "
          "max TV/floor | trials leaving box (settled outside) | verdict | self-check |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in args.systems.split(","):
        system = get_system(make(name))
        horizon = args.time or min(1000.0, system.duration)
        row = measure(name, args.neurons, args.trials, horizon, seed=args.seed)
        rows.append(row)
        if "error" in row:
            print(f"| {name} | {row['N']} | {row['fit_s']:.1f} | {row['e_f_box']:.2g} | | | | | |"
                  f" {row['error'][:80]} | {row['self_check']} |", flush=True)
            continue
        std = max(abs(v) for v in row["std_rel_err"])
        ratio = max(row["tv_over_floor"])
        verdict = ("faithful" if std <= 0.05 and ratio <= 3 and
                   row["network_trials_settled_outside"] == 0 else "NOT faithful")
        print(f"| {name} | {row['N']} | {row['fit_s']:.1f} | {row['e_f_box']:.2g} | "
              f"{row['e_f_held_out']:.2g} | {row['e_f_stationary']:.2g} | {100 * std:.1f} % | "
              f"{ratio:.1f} | {row['network_trials_leaving_box']} "
              f"({row['network_trials_settled_outside']}) | {verdict} | "
              f"{row['self_check']} |", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"argv": sys.argv, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
