"""Scale-out on Dask (issue 14): a sweep against the serial loop, a 10⁶-trial ensemble in bounded
memory against Kramers' rate, and what N machines would give.

    python benchmarks/bench_scale.py                 # all three parts
    python benchmarks/bench_scale.py --parts sweep --fits 16 --neurons 256
    python benchmarks/bench_scale.py --parts ensemble --trials 1000000

1. sweep: ``--fits`` fits of limit_cycle at ``--neurons`` (seeds 0 … fits−1), first as a serial
   loop of ``fit`` in this process (numba's default threads: every core), then as ``ddm_numba.
   cluster.sweep`` on ``--workers`` local workers (one thread each). The numba cache is warm for
   both (one tiny fit first). The models are compared bit for bit.
2. ensemble: a double-well network (σ = 0.5, fitted here) sampled for ``--trials`` trials in
   shards of 10⁴ with ``--stats`` reducers, in a fresh ``ddm sample`` process whose peak
   resident set is read from os.wait4; its escape rate (switches between the cores |z ∓ 1| < 0.5
   per unit time) against the target's own, sampled the same way, and Kramers' formula
   k = √(V''(1) |V''(0)|)/(2π) · exp(−ΔV/D), V = z⁴/4 − z²/2, D = σ²/2.
3. model: the scheduler's cost per task, measured (no-op tasks), and the time the sweep's tasks
   would take on N machines, T_N ≈ ⌈tasks/N⌉ · t_task + tasks · t_scheduler.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import _harness

ROOT = Path(__file__).resolve().parent.parent


def part_sweep(args, report):
    from ddm_numba import fit
    from ddm_numba.cluster import sweep
    opts = dict(max_iter=args.max_iter, self_check_time=0, device="cpu")
    fit("limit_cycle", 16, seed=0, progress=None, **dict(opts, max_iter=2))   # warm cache
    seeds = list(range(args.fits))
    out = Path(tempfile.mkdtemp(prefix="bench_scale_"))
    t0 = time.perf_counter()
    serial = {}
    for s in seeds:
        serial[s] = fit("limit_cycle", args.neurons, seed=s, progress=None, **opts)
    t_serial = time.perf_counter() - t0
    print(f"serial loop: {args.fits} fits of limit_cycle N={args.neurons} in {t_serial:.1f}s",
          flush=True)
    t0 = time.perf_counter()
    rows = sweep("limit_cycle", [args.neurons], seeds, out / "sweep", workers=args.workers,
                 progress=None, **opts)
    t_sweep = time.perf_counter() - t0
    same = 0
    for r, s in zip(rows, seeds):
        with np.load(out / "sweep" / r["file"]) as f:
            net = serial[s]
            same += all(np.array_equal(f[k], getattr(net, k)) for k in ("M", "c", "A", "b"))
    print(f"sweep on {args.workers} workers: {t_sweep:.1f}s (cluster start included): "
          f"{t_serial / t_sweep:.2f}x the serial loop; {same}/{len(rows)} models bit-identical",
          flush=True)
    per_task = float(np.median([float(r["seconds"]) for r in rows]))
    report["sweep"] = {"fits": args.fits, "neurons": args.neurons, "workers": args.workers,
                       "serial_s": t_serial, "sweep_s": t_sweep, "speedup": t_serial / t_sweep,
                       "bit_identical": same, "median_task_s": per_task}


def _rate(stats_path, T, burn):
    out = json.loads(Path(stats_path).read_text())
    n = int(np.sum(out["wells"]["switches"]))
    exposure = out["trials"] * (T - burn)
    return n / exposure, 1.96 * math.sqrt(max(n, 1)) / exposure, n, out


def part_ensemble(args, report):
    from ddm_numba import fit
    sigma, T, burn = 0.5, args.time, 1.0
    tmp = Path(tempfile.mkdtemp(prefix="bench_scale_"))
    model = tmp / "dw.npz"
    net = fit(_sigma_system(sigma), 64, seed=0, progress=None)
    net.save(model)
    D = sigma ** 2 / 2
    kramers = math.sqrt(2.0 * 1.0) / (2 * math.pi) * math.exp(-0.25 / D)
    result = {"trials": args.trials, "time": T, "sigma": sigma, "kramers": kramers}
    for side in ("network", "target"):
        stats = tmp / f"{side}.json"
        cmd = [sys.executable, "-m", "ddm_numba_cli.main", "sample", str(model), "--stats",
               str(stats), "--trials", str(args.trials), "--time", str(T), "--record-every",
               "5", "--shard", "10000", "--wells=-1;1", "--well-radius", "0.5", "--burn-in",
               str(burn), "-q"] + (["--target"] if side == "target" else [])
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        _, err = proc.communicate()
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"ddm sample failed: {err[-2000:]}")
        seconds = time.perf_counter() - t0
        k, ci, n, _ = _rate(stats, T, burn)
        paths_gb = args.trials * (T / 0.05 + 1) * 8 / 1e9
        result[side] = {"rate": k, "ci95": ci, "switches": n, "seconds": seconds,
                        "peak_rss_gb": usage.ru_maxrss * 1024 / 1e9, "paths_would_be_gb": paths_gb}
        print(f"{side}: {args.trials} trials × {T:g} time units in {seconds:.0f}s, peak RSS "
              f"{usage.ru_maxrss / 2**20:.2f} GiB (the paths: {paths_gb:.1f} GB); escape rate "
              f"{k:.4f} ± {ci:.4f} ({n} switches); Kramers {kramers:.4f}", flush=True)
    report["ensemble"] = result


def _sigma_system(sigma):
    from ddm_numba import get_system
    return get_system("double_well", sigma=sigma)


def part_model(args, report):
    from ddm_numba.cluster import connect
    with connect(workers=args.workers) as client:
        client.submit(int, 0).result()
        n = 400
        t0 = time.perf_counter()
        client.gather([client.submit(int, i, pure=False) for i in range(n)])
        t_sched = (time.perf_counter() - t0) / n
    t_task = report.get("sweep", {}).get("median_task_s", 30.0)
    tasks = 1600
    print(f"scheduler: {t_sched * 1e3:.2f} ms per task ({n} no-op tasks, {args.workers} "
          f"workers); a fit task takes {t_task:.1f}s here", flush=True)
    table = {}
    for machines in (1, 2, 8, 32, 128, 512):
        T = math.ceil(tasks / machines) * t_task + tasks * t_sched
        table[machines] = T
        print(f"  {tasks} fits on {machines:4d} one-core workers: ~{T / 60:.1f} min", flush=True)
    report["model"] = {"scheduler_s_per_task": t_sched, "task_s": t_task, "tasks": tasks,
                       "minutes": {str(k): v / 60 for k, v in table.items()}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", default="sweep,ensemble,model")
    ap.add_argument("--fits", type=int, default=16)
    ap.add_argument("--neurons", type=int, default=256)
    ap.add_argument("--max-iter", type=int, default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--trials", type=int, default=1_000_000)
    ap.add_argument("--time", type=float, default=10.0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    report = {"machine": _harness.machine_basics()}
    print(f"{report['machine']['cpu_model']}, {report['machine']['cpu_count']} cores, "
          f"{report['machine']['date']}", flush=True)
    parts = args.parts.split(",")
    if "sweep" in parts:
        part_sweep(args, report)
    if "ensemble" in parts:
        part_ensemble(args, report)
    if "model" in parts:
        part_model(args, report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
