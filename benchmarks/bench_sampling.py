"""Sampling speed: ddm_numba's Euler–Maruyama against numpy, PyTorch, torchsde and JAX baselines.

    python benchmarks/bench_sampling.py [--quick] [--N 1024] [--trials 64,512] [--steps 2000]
        [--modes lowrank,full] [--frameworks numpy,torch,torchsde,jax] [--repeats 5]
        [--repeats-slow 3] [--threads 2] [--baseline-phi tanh|rational] [--json out.json]

Network (float64): fitted to the lorenz target, d = 3, τ = 1: M, c from initial_embedding, A, b_z
from ridge_decoders (λ_A = 1e-8·mean(λ), on --fit-samples points of lorenz's box), b = M b_z + c,
S0 = σ I = 2 I (lorenz's σ), R = 0, no private noise. lowrank: W = M A kept factored (O(N d) a
step); full: the same W = M A stored as a dense N×N matrix (Network(..., W=...), O(N²) a step).
Runs of --steps steps at lorenz's dt = 0.002, recording z = P (x − c) every 10 steps, from
x0 = M z0 + c with z0 uniform over the box. ddm_numba: simulate.sample_network (the whole call).

Correctness first: with S0 = 0 (no noise) and ddm_numba's activation φ̃ (tanh to 1.1e-6,
``_jit.phi_em``) in place of tanh, every framework runs the same deterministic recursion, and every
baseline's recorded z must match ddm_numba's to 1e-8 relative (‖z − z_ref‖ / ‖z_ref‖) on
--check-trials trials × --check-steps steps, or nothing is timed (exit status 1). (With each
framework's own tanh the noiseless lorenz paths differ by about 8e-6 after 200 steps: φ̃'s
error, grown by the chaotic flow.) The timed runs use each framework's own tanh, its fastest
built-in activation (--baseline-phi rational times them with φ̃ too). Then noisy runs
are timed: one warm-up call ("first call": compilation), then the median of --repeats calls
(--repeats-slow for torchsde). Reported: neuron-steps per second = trials · steps · N / seconds,
and the speed-up ddm_numba rate / baseline rate. Each framework draws its own normals, so noisy
paths differ from ddm_numba's; their statistics (mean and spread of z) are saved for a look.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ddm_numba.matching import (DriftData, initial_embedding, ridge_decoders,  # noqa: E402
                                sample_domain)
from ddm_numba.network import Network  # noqa: E402
from ddm_numba.simulate import sample_network  # noqa: E402
from ddm_numba.systems import evaluate, get_system  # noqa: E402

import _harness as H  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
import baselines as bl  # noqa: E402

FRAMEWORKS = ("numpy", "torch", "torchsde", "jax")
SLOW = ("torchsde",)          # timed --repeats-slow times
MODES = ("lowrank", "full")
TOL = 1e-8
EVERY = 10
SAMPLERS = {"numpy": bl.em_numpy, "torch": bl.em_torch, "torchsde": bl.em_torchsde,
            "jax": bl.em_jax}


def parse_list(text, allowed, what, cast=str):
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    try:
        items = [cast(t) for t in items]
    except ValueError:
        raise SystemExit(f"{what}: cannot read {text!r}") from None
    if allowed is not None:
        bad = [t for t in items if t not in allowed]
        if bad:
            raise SystemExit(f"{what}: unknown {bad[0]!r} (choose from {', '.join(allowed)})")
    return items


def build_networks(N, fit_samples, seed):
    """The lorenz networks of the module docstring: {mode: (noisy net, noiseless net)}."""
    system = get_system("lorenz")
    rng = np.random.default_rng([seed, N])
    z, _ = sample_domain(system, fit_samples, rng)
    f, _ = evaluate(system, z, None)
    lam = 1.0 / f.var(axis=0)
    data = DriftData(z, np.zeros((len(z), 0)), f, lam, 1.0)
    M, c = initial_embedding(system.domain, N, rng)
    A, b_z, _ = ridge_decoders(data, M, c, 1e-8 * float(np.mean(lam)))
    d, m = system.d, system.m
    meta = {"system": {"name": system.name, "dt": system.dt, "domain": system.domain.tolist()}}
    R = np.zeros((d, m, N))
    nets = {}
    for mode in MODES:
        kw = {"A": A} if mode == "lowrank" else {"W": M @ A}
        nets[mode] = tuple(Network(1.0, M, c, M @ b_z + c, S0, R, meta=meta, **kw)
                           for S0 in (system.sigma * np.eye(d), np.zeros((d, m))))
    return system, nets


def initial_latent(system, trials, seed):
    lo, hi = system.domain[:, 0], system.domain[:, 1]
    return lo + (hi - lo) * np.random.default_rng([seed, trials, 1]).random((trials, system.d))


def run_ddm(net, z0, steps, dt, seed):
    return sample_network(net, trials=len(z0), time=steps * dt, seed=seed, dt=dt,
                          record_every=EVERY, z0=z0).z


def correctness(system, nets, frameworks, args, dt):
    """S0 = 0: each baseline's z against ddm_numba's, per mode. Returns {mode: {fw: rel diff}}."""
    out = {}
    z0 = initial_latent(system, args.check_trials, args.seed)
    for mode, (_, quiet) in nets.items():
        ref = run_ddm(quiet, z0, args.check_steps, dt, args.seed)
        arrays, x0 = bl.network_arrays(quiet), quiet.embed(z0)
        out[mode] = {}
        for fw in frameworks:
            z = SAMPLERS[fw](arrays, x0, args.check_steps, dt, EVERY, args.seed, exact_phi=False)
            if z.shape != ref.shape:
                raise SystemExit(f"{fw} returned z of shape {z.shape}, ddm_numba {ref.shape}")
            out[mode][fw] = H.relative_difference(z, ref)
    return out


def time_mode(net, system, trials, frameworks, args, dt):
    """First call and median seconds of each framework on one (mode, trials) case."""
    z0 = initial_latent(system, trials, args.seed)
    arrays, x0 = bl.network_arrays(net), net.embed(z0)
    calls = {"ddm_numba": lambda: run_ddm(net, z0, args.steps, dt, args.seed)}
    for fw in frameworks:
        calls[fw] = (lambda fw=fw: SAMPLERS[fw](arrays, x0, args.steps, dt, EVERY, args.seed,
                                                exact_phi=args.baseline_phi == "tanh"))
    row = {"first_s": {}, "seconds": {}, "times_s": {}, "rate": {}, "z_stats": {}}
    work = trials * args.steps * net.N
    for fw, fn in calls.items():
        H.settle()
        z, row["first_s"][fw] = H.first_call(fn)
        repeats = args.repeats_slow if fw in SLOW else args.repeats
        seconds, times = H.median_time(fn, repeats)
        row["seconds"][fw], row["times_s"][fw] = seconds, times
        row["rate"][fw] = work / seconds
        row["z_stats"][fw] = {"mean": z.mean(axis=(0, 1)).tolist(),
                              "std": z.std(axis=(0, 1)).tolist(),
                              "finite": bool(np.isfinite(z).all())}
        if not row["z_stats"][fw]["finite"]:  # ddm_numba raises on a blow-up; the baselines don't
            print(f"  warning: {fw}'s noisy paths became non-finite (its rate still stands)")
        print(f"  {fw:9s} {seconds:9.3f} s  ({row['rate'][fw]:.3g} neuron-steps/s, "
              f"first call {row['first_s'][fw]:.3f} s, {repeats} timed)", flush=True)
    row["speedup"] = {fw: row["rate"]["ddm_numba"] / row["rate"][fw] for fw in frameworks}
    return row


def print_table(rows, mode, frameworks, args):
    rows = [r for r in rows if r["mode"] == mode]
    if not rows:
        return
    print(f"\n{mode}: N={rows[0]['N']}, {args.steps} steps, neuron-steps per second (median of "
          f"{args.repeats}, torchsde {args.repeats_slow}); "
          "speed-up = ddm_numba rate / baseline rate")
    print(f"{'trials':>7s} {'ddm_numba':>10s}" + "".join(f" {fw:>9s}" for fw in frameworks)
          + " |" + "".join(f" {'ddm/' + fw:>12s}" for fw in frameworks))
    for r in rows:
        print(f"{r['trials']:7d} {r['rate']['ddm_numba']:10.3g}"
              + "".join(f" {r['rate'][fw]:9.3g}" for fw in frameworks)
              + " |" + "".join(f" {r['speedup'][fw]:11.1f}x" for fw in frameworks))
    print("first call (warm-up: compilation), s")
    for r in rows:
        print(f"{r['trials']:7d} {r['first_s']['ddm_numba']:10.3f}"
              + "".join(f" {r['first_s'][fw]:9.3f}" for fw in frameworks))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="small sizes: N = 256, 64 trials, 200 steps (a smoke test)")
    ap.add_argument("--N", type=int, default=1024, help="neurons (default 1024)")
    ap.add_argument("--trials", default="64,512", help="trial counts, comma-separated")
    ap.add_argument("--steps", type=int, default=2000, help="Euler steps per run (default 2000)")
    ap.add_argument("--modes", default="lowrank,full", help="lowrank, full or both (default both)")
    ap.add_argument("--frameworks", default=",".join(FRAMEWORKS),
                    help="baselines to run, from numpy,torch,torchsde,jax (ddm_numba always runs)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs after the warm-up")
    ap.add_argument("--repeats-slow", type=int, default=3, help="timed runs for torchsde")
    ap.add_argument("--check-trials", type=int, default=4, help="trials of the noiseless check")
    ap.add_argument("--check-steps", type=int, default=200, help="steps of the noiseless check")
    ap.add_argument("--fit-samples", type=int, default=16384,
                    help="lorenz samples for the ridge decoders")
    ap.add_argument("--threads", type=int, default=2,
                    help="threads for numba, torch and BLAS (JAX: 1 or its default)")
    ap.add_argument("--baseline-phi", choices=("tanh", "rational"), default="tanh",
                    help="the baselines' activation in the timed runs: their own tanh (default) "
                         "or ddm_numba's rational φ̃")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="save every number and the machine here")
    args = ap.parse_args()
    if args.quick:
        args.N, args.trials, args.steps = 256, "64", 200
    trial_counts = parse_list(args.trials, None, "--trials", int)
    modes = parse_list(args.modes, MODES, "--modes")
    frameworks = parse_list(args.frameworks, FRAMEWORKS, "--frameworks")
    if min([args.repeats, args.repeats_slow, args.check_trials, args.N] + trial_counts) < 1:
        raise SystemExit("--repeats, --repeats-slow, --check-trials, --N and --trials must be >= 1")
    for what, steps in (("--steps", args.steps), ("--check-steps", args.check_steps)):
        if steps < EVERY or steps % EVERY:
            raise SystemExit(f"{what} must be a positive multiple of the recording interval "
                             f"{EVERY}")
    bl.limit_threads(args.threads)
    machine = bl.machine_info(args.threads)
    print(f"{machine['cpu_model']}, {machine['cpu_count']} cores; threads: numba "
          f"{machine['threads']['numba']}, torch {machine['threads']['torch']}, BLAS "
          f"{args.threads}, JAX {machine['threads']['jax']}")
    t0 = time.perf_counter()
    system, nets = build_networks(args.N, args.fit_samples, args.seed)
    nets = {mode: nets[mode] for mode in modes}
    dt = system.dt
    print(f"lorenz network N={args.N} (ridge decoders: {time.perf_counter() - t0:.1f} s), "
          f"dt={dt}, record every {EVERY} steps, torchsde noise_type "
          f"{bl.TORCHSDE_NOISE_TYPE!r}; baselines' activation: "
          + ("their own tanh" if args.baseline_phi == "tanh" else "ddm_numba's rational φ̃"))

    checks = correctness(system, nets, frameworks, args, dt)
    worst = max((v for m in checks.values() for v in m.values()), default=0.0)
    failed = [(mode, fw, v) for mode, m in checks.items() for fw, v in m.items() if not v <= TOL]
    for mode, m in checks.items():
        print(f"check {mode:8s} S0=0, {args.check_trials} trials × {args.check_steps} steps: "
              + ", ".join(f"{fw} {v:.1e}" for fw, v in m.items()))
    print(f"worst relative difference {worst:.1e} (tolerance {TOL:g})")
    result = {"benchmark": "sampling", "machine": machine, "args": vars(args), "tolerance": TOL,
              "network": {"system": "lorenz", "N": args.N, "d": 3, "tau": 1.0, "dt": dt,
                          "record_every": EVERY, "S0": "2 I", "torchsde_noise_type":
                          bl.TORCHSDE_NOISE_TYPE},
              "check": checks, "worst_relative_difference": worst, "rows": []}
    if failed:
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(result, fh, indent=1)
        for mode, fw, v in failed:
            print(f"correctness check failed: {fw} ({mode}) differs from ddm_numba by "
                  f"{v:.3e} relative (> {TOL:g}); refusing to time", file=sys.stderr)
        sys.exit(1)

    for mode, (net, _) in nets.items():
        for trials in trial_counts:
            print(f"{mode}, {trials} trials, {args.steps} steps:", flush=True)
            row = time_mode(net, system, trials, frameworks, args, dt)
            row.update({"mode": mode, "N": args.N, "trials": trials, "steps": args.steps})
            result["rows"].append(row)
    for mode in modes:
        print_table(result["rows"], mode, frameworks, args)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
        print(f"\nsaved {args.json}")


if __name__ == "__main__":
    main()
