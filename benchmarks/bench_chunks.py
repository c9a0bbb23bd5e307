"""Sampling in chunks (for Ctrl-C and progress) against one call for the whole run.

    python benchmarks/bench_chunks.py [--neurons 1024] [--trials 512] [--steps 2000] [--repeats 5]

The same sample_network call with the default chunk target (simulate.CHUNK_SECONDS, 0.25 s) and
with chunking off (one chunk); paths must be bit-identical. Prints medians and their ratio; both
variants alternate within one process, so machine load affects them alike.
"""
import argparse
import statistics
import time

import numpy as np

from ddm_numba import fit, simulate


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--neurons", type=int, default=1024)
    ap.add_argument("--trials", type=int, default=512)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    net = fit("lorenz", args.neurons, max_iter=0, progress=None)
    kw = dict(trials=args.trials, time=args.steps * 0.01, seed=1, dt=0.01, record_every=5)
    default = simulate.CHUNK_SECONDS
    ref = simulate.sample_network(net, **kw)          # warm-up (compilation)
    times = {"chunked": [], "one chunk": []}
    for _ in range(args.repeats):
        for name, seconds in (("chunked", default), ("one chunk", float("inf"))):
            simulate.CHUNK_SECONDS = seconds
            first = 10**12 if seconds == float("inf") else None
            t0 = time.perf_counter()
            if first:   # one chunk: a first chunk as long as the run
                orig = simulate._run_chunks
                simulate._run_chunks = lambda f, n, e, dt, c, p: orig(f, n, e, dt, n, p)
            try:
                traj = simulate.sample_network(net, **kw)
            finally:
                if first:
                    simulate._run_chunks = orig
            times[name].append(time.perf_counter() - t0)
            assert np.array_equal(traj.z, ref.z), "chunking changed the paths"
    simulate.CHUNK_SECONDS = default
    work = args.trials * args.steps * args.neurons
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"{k:10s} median {v:.3f} s  ({work / v:.3g} neuron-steps/s)")
    print(f"chunked / one chunk: {med['chunked'] / med['one chunk']:.3f} (paths identical)")


if __name__ == "__main__":
    main()
