"""A fit and a sample on a quiet machine and with one competing CPU-bound process.

    python benchmarks/bench_load.py [--repeat 2] [--timeout 300] [--baseline PATH] [--json out.json]

Runs, each in a fresh process (the numba cache warm: one untimed run first):
    fit     ddm fit lorenz --neurons 512 (default settings, self-check included)
    sample  ddm sample on that model, 1000 trials × 20 time units
quiet and with one competing process (a Python busy loop on one core), with the default thread
settings and with NUMBA_NUM_THREADS=1. Reports the median wall time of --repeat runs of each,
and the ratios the issue asks for: loaded / quiet (default settings), and loaded default /
loaded single thread. --baseline PATH puts another install first on PYTHONPATH (e.g. an older
checkout installed with `pip install --target PATH`) and measures it the same way in the same
session, for a before/after. A run longer than --timeout is stopped and reported as "> timeout".
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from _harness import machine_basics  # noqa: E402

BUSY = "while True: pass"


def ddm(args, env, timeout):
    """Wall seconds of `ddm ARGS` in a fresh process, or None past the timeout."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "ddm_numba_cli.main", *args], env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    if proc.returncode != 0:
        raise SystemExit(f"ddm {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def measure(label, env, work, repeat, timeout, competing):
    busy = subprocess.Popen([sys.executable, "-c", BUSY]) if competing else None
    try:
        out = {}
        for name, args in work.items():
            runs = [ddm(args, env, timeout) for _ in range(repeat)]
            out[name] = (None if any(r is None for r in runs) else statistics.median(runs))
            shown = "> timeout" if out[name] is None else f"{out[name]:.1f} s"
            print(f"  {label:34s} {name:7s} {shown}", flush=True)
        return out
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--baseline", default=None, help="another install, measured the same way")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    folder = tempfile.mkdtemp(prefix="bench_load_")
    model = os.path.join(folder, "lorenz.npz")
    base_env = {k: v for k, v in os.environ.items() if k != "NUMBA_NUM_THREADS"}
    work = {"fit": ["fit", "lorenz", "--neurons", "512", "--out", model, "--quiet"],
            "sample": ["sample", model, "--out", os.path.join(folder, "traj.npz"),
                       "--trials", "1000", "--time", "20", "--quiet"]}
    installs = [("this checkout", None)] + ([("baseline", args.baseline)] if args.baseline else [])
    results = {"machine": machine_basics(), "repeat": args.repeat, "timeout": args.timeout}
    for name, path in installs:
        env = dict(base_env)
        if path:
            env["PYTHONPATH"] = path + os.pathsep + env.get("PYTHONPATH", "")
        one = {**env, "NUMBA_NUM_THREADS": "1"}
        for args_ in work.values():          # warm the numba cache (and make the model)
            ddm(args_, env, None)
        print(f"{name}:", flush=True)
        rows = {"quiet": measure("quiet, default threads", env, work, args.repeat,
                                 args.timeout, False),
                "loaded": measure("one competing process, default", env, work, args.repeat,
                                  args.timeout, True),
                "loaded_1": measure("one competing process, 1 thread", one, work,
                                    args.repeat, args.timeout, True)}
        for job in work:
            q, ld, l1 = (rows[k][job] for k in ("quiet", "loaded", "loaded_1"))
            rows.setdefault("ratios", {})[job] = {
                "loaded_over_quiet": None if q is None or ld is None else ld / q,
                "loaded_over_single_thread": None if ld is None or l1 is None else ld / l1}
        print("  ratios " + json.dumps(rows["ratios"]), flush=True)
        results[name] = rows
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
