"""Whole jobs: wall time of the CLI, cold (JIT compilation included) and warm (numba's cache), and
where the time goes.

    python benchmarks/bench_jobs.py [--repeats 5] [--json jobs.json] [--quick]

Jobs (each a fresh `ddm` process, as a user runs it):
  fit lorenz    `ddm fit lorenz --neurons 512 --out M.npz`
  sample lorenz `ddm sample M.npz --trials 1000 --time 10 --out T.npz` (5000 steps of 512 neurons)
  start-up      `ddm sample M.npz --trials 1 --time 0.01 --out T.npz`: import + cached kernels
  fit <builtin> `ddm fit S --neurons 256` for the 1-D and 2-D built-ins
Cold: an empty NUMBA_CACHE_DIR, so every kernel compiles. Warm: the same cache directory again
(the median of --repeats runs). Then one instrumented warm run of each lorenz job splits its time
into: import (python + ddm_numba + numba), compilation / cache loading (numba's "numba:compile"
events, merged), kernels (time inside ddm_numba.backends.cpu's kernels, less compilation),
optimizer and the rest (scipy's L-BFGS-B, numpy, file writing: the remainder).
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# The instrumented child: patches the CPU kernels with timers and records numba's compile events.
CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import numba.core.event as ev
import ddm_numba
from ddm_numba.backends import cpu
from ddm_numba_cli.main import main
t_import = time.perf_counter() - t0

class Compiles(ev.Listener):
    def __init__(self):
        self.spans = []
        self.open = {}
    def on_start(self, event):
        self.open[id(event.data)] = time.perf_counter()
    def on_end(self, event):
        start = self.open.pop(id(event.data), None)
        if start is not None:
            self.spans.append((start, time.perf_counter()))

calls = []
def timed(name, fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            calls.append((name, start, time.perf_counter()))
    return wrapper

for name in ("lowrank_drift_loss_grad", "gram_statistics", "weighted_gram_statistics",
             "diffusion_loss_grad", "simulate_network"):
    setattr(cpu, name, timed(name, getattr(cpu, name)))

listener = Compiles()
ev.register("numba:compile", listener)
t1 = time.perf_counter()
try:
    main(sys.argv[1:], standalone_mode=False)
finally:
    total = time.perf_counter() - t1

def merge(spans):
    out = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out

compiles = merge(listener.spans)
def overlap(a, b):
    return sum(max(0.0, min(b, y) - max(a, x)) for x, y in compiles)

kernels = {}
for name, a, b in calls:
    kernels[name] = kernels.get(name, 0.0) + (b - a) - overlap(a, b)
compile_s = sum(b - a for a, b in compiles)
print(json.dumps({"import": t_import, "run": total, "compile": compile_s, "kernels": kernels,
                  "kernel_calls": {n: sum(1 for c in calls if c[0] == n) for n in kernels}}))
"""


def ddm_command():
    exe = Path(sys.executable).parent / "ddm"
    if not exe.exists():
        sys.exit(f"no `ddm` next to {sys.executable}: install the project (pip install .)")
    return [str(exe)]


def run(cmd, env, cwd):
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return wall, proc.stdout


def job_times(name, args, cache, work, repeats):
    """Cold (empty cache), then the median of `repeats` warm runs, for one CLI job."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    cold, _ = run(ddm_command() + args, env, work)
    warm = [run(ddm_command() + args, env, work)[0] for _ in range(repeats)]
    row = {"job": name, "command": "ddm " + " ".join(args), "cold_s": cold,
           "warm_median_s": float(np.median(warm)), "warm_runs_s": warm}
    print(f"  {name:22s} cold {cold:7.1f} s   warm {row['warm_median_s']:7.2f} s "
          f"(median of {repeats})", flush=True)
    return row


def split(args, cache, work):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    start = time.perf_counter()
    _, out = run([sys.executable, "-c", CHILD] + args, env, work)
    wall = time.perf_counter() - start
    info = json.loads(out.strip().splitlines()[-1])
    kernel_s = sum(info["kernels"].values())
    info["wall"] = wall
    info["kernels_total"] = kernel_s
    info["optimizer_and_rest"] = info["run"] - info["compile"] - kernel_s
    info["interpreter_start"] = wall - info["import"] - info["run"]
    return info


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5, help="warm runs per job (median)")
    ap.add_argument("--quick", action="store_true", help="lorenz jobs only, 3 warm runs")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    repeats = 3 if args.quick else args.repeats
    work = Path(tempfile.mkdtemp(prefix="ddm_jobs_"))
    cache = work / "numba_cache"
    cache.mkdir()
    rows = []
    try:
        print(f"whole jobs (`ddm` processes; cold = empty NUMBA_CACHE_DIR, warm = median of "
              f"{repeats})", flush=True)
        rows.append(job_times("fit lorenz N=512", ["fit", "lorenz", "--neurons", "512", "--out",
                                                   "lorenz.npz"], cache, work, repeats))
        rows.append(job_times("sample 1000 trials", ["sample", "lorenz.npz", "--trials", "1000",
                                                     "--time", "10", "--out", "t.npz",
                                                     "--device", "cpu"], cache, work, repeats))
        rows.append(job_times("sample start-up", ["sample", "lorenz.npz", "--trials", "1",
                                                  "--time", "0.01", "--out", "t1.npz",
                                                  "--device", "cpu"], cache, work, repeats))
        if not args.quick:
            for system in ("double_well", "multiplicative", "ou2d", "limit_cycle", "ring_wells",
                           "multiwell"):
                rows.append(job_times(f"fit {system} N=256",
                                      ["fit", system, "--neurons", "256", "--out",
                                       f"{system}.npz"], cache, work, repeats))
        print("\nwhere a warm run's time goes (one instrumented run, s)")
        print(f"{'job':22s} {'wall':>6s} {'start':>6s} {'import':>7s} {'compile':>8s} "
              f"{'kernels':>8s} {'optimizer+rest':>15s}")
        splits = {}
        for name, jargs in (("fit lorenz N=512", rows[0]["command"].split()[1:]),
                            ("sample 1000 trials", rows[1]["command"].split()[1:])):
            s = split(jargs, cache, work)
            splits[name] = s
            print(f"{name:22s} {s['wall']:6.2f} {s['interpreter_start']:6.2f} {s['import']:7.2f} "
                  f"{s['compile']:8.2f} {s['kernels_total']:8.2f} {s['optimizer_and_rest']:15.2f}")
            for k, v in sorted(s["kernels"].items(), key=lambda kv: -kv[1]):
                print(f"    {k:28s} {v:7.2f} s in {s['kernel_calls'][k]} calls")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        import numba
        info = {"date": time.strftime("%Y-%m-%d %H:%M"), "platform": platform.platform(),
                "python": platform.python_version(), "numba": numba.__version__,
                "numpy": np.__version__, "cpus": os.cpu_count()}
        tmp = args.json + ".tmp"
        with open(tmp, "w") as fh:
            json.dump({"machine": info, "jobs": rows, "splits": splits}, fh, indent=1)
        os.replace(tmp, args.json)


if __name__ == "__main__":
    main()
