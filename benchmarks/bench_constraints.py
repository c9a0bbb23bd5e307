"""Biological constraints (issue 15): e_f and the off-manifold drift of masked full-mode fits
against the density of the mask, and Dale's law, at 256 neurons.

    python benchmarks/bench_constraints.py [--systems ou2d,ring_wells] [--neurons 256]
        [--densities 1,0.5,0.2,0.1] [--kind random] [--dale 0.8] [--json FILE]

Each row is one `fit(system, N, mode="full", mask=f"{kind}:p={p}")` (p = 1: no mask) with the
default training measure and a self-check; e_f, e_D and off_manifold_rel (‖Q F‖ / ‖f‖ on the
held-out states) are the fit's own figures (docs/fidelity.md), seconds the wall time.
"""
import argparse
import json
import time

import _harness


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--systems", default="ou2d,ring_wells")
    ap.add_argument("--neurons", type=int, default=256)
    ap.add_argument("--densities", default="1,0.5,0.2,0.1")
    ap.add_argument("--kind", default="random", choices=["random", "distance"])
    ap.add_argument("--dale", type=float, default=None,
                    help="masked rows with Dale's law too (this E fraction)")
    ap.add_argument("--dale-compare", type=float, default=0.8,
                    help="E fraction of the Dale comparison: low rank (W = M A, M >= 0, signed "
                         "A columns) against full mode, no mask (0: skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from ddm_numba import fit
    machine = _harness.machine_basics()
    print(f"{machine['cpu_model']}, {machine['cpu_count']} cores, {machine['date']}", flush=True)
    rows = []
    print(f"{'system':12s} {'p':>5s} {'density':>8s} {'e_f':>9s} {'e_D':>9s} {'off_rel':>9s} "
          f"{'verdict':>12s} {'s':>6s}", flush=True)
    for system in args.systems.split(","):
        for p in (float(v) for v in args.densities.split(",")):
            mask = None if p >= 1 else f"{args.kind}:p={p:g}"
            t0 = time.perf_counter()
            net = fit(system, args.neurons, mode="full", seed=args.seed, mask=mask,
                      dale=args.dale, progress=None)
            seconds = time.perf_counter() - t0
            fig = net.meta["fit"]
            density = net.meta.get("mask", {}).get("density", 1.0)
            verdict = (net.meta.get("self_check") or {}).get("verdict", "")
            row = {"system": system, "p": p, "density": density, "e_f": fig["e_f"],
                   "e_D": fig["e_D"], "off_manifold_rel": fig.get("off_manifold_rel"),
                   "verdict": verdict, "seconds": seconds, "dale": args.dale}
            rows.append(row)
            print(f"{system:12s} {p:5.2f} {density:8.3f} {fig['e_f']:9.2e} {fig['e_D']:9.2e} "
                  f"{fig.get('off_manifold_rel', float('nan')):9.2e} {verdict:>12s} "
                  f"{seconds:6.1f}", flush=True)
    if args.dale_compare:
        print(f"\nDale's law, {args.dale_compare:.0%} excitatory, no mask:", flush=True)
        print(f"{'system':12s} {'mode':8s} {'e_f':>9s} {'e_D':>9s} {'off_rel':>9s} "
              f"{'verdict':>12s} {'s':>6s} {'signs ok':>8s}", flush=True)
        for system in args.systems.split(","):
            for mode in ("lowrank", "full"):
                t0 = time.perf_counter()
                net = fit(system, args.neurons, mode=mode, seed=args.seed,
                          dale=args.dale_compare, progress=None)
                seconds = time.perf_counter() - t0
                W = net.W if mode == "full" else net.M @ net.A
                n_exc = net.meta["dale"]["n_excitatory"]
                ok = bool((W[:, :n_exc] >= 0).all() and (W[:, n_exc:] <= 0).all())
                fig = net.meta["fit"]
                verdict = (net.meta.get("self_check") or {}).get("verdict", "")
                rows.append({"system": system, "mode": mode, "dale": args.dale_compare,
                             "e_f": fig["e_f"], "e_D": fig["e_D"],
                             "off_manifold_rel": fig.get("off_manifold_rel"),
                             "verdict": verdict, "seconds": seconds, "signs_ok": ok})
                print(f"{system:12s} {mode:8s} {fig['e_f']:9.2e} {fig['e_D']:9.2e} "
                      f"{fig.get('off_manifold_rel', float('nan')):9.2e} {verdict:>12s} "
                      f"{seconds:6.1f} {str(ok):>8s}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": machine, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
