"""Peak memory (resident set size) of each command, each in a fresh process.

    python benchmarks/bench_memory.py [--large] [--baseline PATH] [--json out.json]

Runs, in a scratch folder, and reports each process's peak RSS (os.wait4's ru_maxrss: the
child's own peak, whatever ran before it) and wall time:
    fit double_well          ddm fit double_well (N = 256, d = 1)
    fit lorenz 512           ddm fit lorenz --neurons 512 (d = 3)
    sample 1000 trials       ddm sample on the lorenz model, 1000 trials × 20 time units
    fit_data README          the README snippet: fit_data of ou2d, 100 trials × 100 time units
                             at Δt 0.01 (10⁶ increments), N = 256
    fit --data 2e6, N 512    (--large) ddm fit --data on 2·10⁶ increments, N = 512, --state-noise
                             --substeps 1 (the issue's "fits in under 4 GB"; several minutes)
    analyze double_well      ddm analyze of the 1-D model (100 trials × 200 time units)
    analyze lorenz 512       ddm analyze of the lorenz model
The recordings are made first (not measured). --baseline PATH puts another install first on
PYTHONPATH (an older checkout installed with `pip install --target PATH`) and measures it the
same way, for a before/after in one session.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from _harness import machine_basics  # noqa: E402

README_SNIPPET = """
from ddm_numba import sample_target, fit_data
data = sample_target("ou2d", trials=100, time=100, seed=5, record_every=1)
net = fit_data(data, neurons=256)
"""

RECORD = """
import sys
from ddm_numba import sample_target
sample_target("ou2d", trials=250, time=100, seed=5, record_every=1).save(sys.argv[1])
"""


def peak(cmd, env, cwd):
    """(peak RSS in bytes, wall seconds) of one command in a fresh process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-2000:]}")
    return usage.ru_maxrss * 1024, time.perf_counter() - t0


def jobs(large):
    ddm = [sys.executable, "-m", "ddm_numba_cli.main"]
    work = [("fit double_well", ddm + ["fit", "double_well", "-o", "dw.npz"]),
            ("fit lorenz 512", ddm + ["fit", "lorenz", "--neurons", "512", "-o", "l512.npz"]),
            ("sample 1000 trials", ddm + ["sample", "l512.npz", "--trials", "1000", "--time",
                                          "20", "-o", "s.npz"]),
            ("fit_data README", [sys.executable, "-c", README_SNIPPET])]
    if large:
        work.append(("fit --data 2e6, N 512",
                     ddm + ["fit", "--data", "rec.npz", "--neurons", "512", "--state-noise",
                            "--substeps", "1", "-o", "rec_model.npz"]))
    work += [("analyze double_well", ddm + ["analyze", "dw.npz", "-o", "dw_an"]),
             ("analyze lorenz 512", ddm + ["analyze", "l512.npz", "-o", "l512_an"])]
    return work


def run(label, env, large, folder):
    if large and not os.path.exists(os.path.join(folder, "rec.npz")):
        subprocess.run([sys.executable, "-c", RECORD, "rec.npz"], env=env, cwd=folder,
                       check=True)
    out = {}
    for name, cmd in jobs(large):
        rss, wall = peak(cmd, env, folder)
        out[name] = {"peak_rss_bytes": rss, "seconds": wall}
        print(f"  {label:10s} {name:24s} {rss / 1e9:6.2f} GB  {wall:7.1f} s", flush=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--large", action="store_true",
                    help="also fit 2·10⁶ increments at N = 512 (several minutes)")
    ap.add_argument("--baseline", help="another install (pip install --target PATH) to compare")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    print(machine_basics())
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        if args.baseline:
            env = dict(os.environ, PYTHONPATH=os.path.abspath(args.baseline))
            results["baseline"] = run("baseline", env, args.large, folder)
        results["current"] = run("current", dict(os.environ), args.large, folder)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": machine_basics(), "results": results}, fh, indent=1)


if __name__ == "__main__":
    main()
