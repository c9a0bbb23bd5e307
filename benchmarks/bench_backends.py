"""CPU against CUDA on the same work: sampling throughput and the Gram pass of training.

    python benchmarks/bench_backends.py [--quick] [--repeat 5] [--json out.json]

Sampling: neuron-steps per second of `sample_network` (the whole API call: transfers included)
for N = 1024 and 4096, low-rank and full W, 1024–16384 trials. Gram pass: seconds of
`backend.gram_statistics` (G = Ψᵀ Ψ / K, O(K N²): the full mode's training and learning from
data), N = 1024–4096, K = 16384.

The CPU side cannot do the largest cases in reasonable time (full W, N = 4096: ~10¹¹ flops per
step over 1024 trials), so it runs the same kernel on fewer trials / samples — the work per unit
(neuron-step, sample) is the same, so rates are comparable — and says so in the table ("cpu
trials" and "cpu K" columns). Medians of --repeat runs after one warm-up run (compilation). Without
a usable GPU only the CPU side runs.
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from ddm_numba import Network, sample_network  # noqa: E402
from ddm_numba.backends import cpu, cuda_status, simulator_enabled  # noqa: E402
from _harness import warm_median  # noqa: E402  (benchmarks/ is on sys.path)


def random_network(N, d, full, seed=0):
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((N, d)) / np.sqrt(d)
    c = rng.standard_normal(N) * 0.5
    A = rng.standard_normal((d, N)) / np.sqrt(N)
    S0 = 0.3 * np.eye(d)
    meta = {"system": {"name": "bench", "d": d, "domain": [[-1.0, 1.0]] * d, "dt": 0.01}}
    kw = dict(W=M @ A + rng.standard_normal((N, N)) * 0.1 / np.sqrt(N)) if full else dict(A=A)
    return Network(1.0, M, c, M @ (0.1 * np.ones(d)) + c, S0, np.zeros((d, d, N)), meta=meta,
                   **kw)


def bench_sampling(N, full, trials, steps, device, repeat):
    net = random_network(N, 3, full)
    dt = 0.01

    def run():
        sample_network(net, trials=trials, time=steps * dt, dt=dt, record_every=steps,
                       seed=1, device=device)
    seconds = warm_median(run, repeat)
    return trials * steps * N / seconds, seconds


def bench_gram(N, K, backend, repeat, d=3, seed=0):
    rng = np.random.default_rng(seed)
    z, Y = rng.standard_normal((K, d)), rng.standard_normal((K, d))
    MT, c = np.ascontiguousarray(rng.standard_normal((d, N))), rng.standard_normal(N)
    return warm_median(lambda: backend.gram_statistics(z, np.zeros((K, 0)), Y, MT, c), repeat)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    usable, reason = cuda_status()
    gpu = usable and not simulator_enabled()
    print(f"CUDA: {reason}" + ("" if gpu else " — CPU only"))
    rows = []
    steps = 20 if args.quick else 200
    sizes = [(256, 64)] if args.quick else [(1024, 1024), (1024, 16384), (4096, 1024),
                                             (4096, 4096)]
    for N, trials in sizes:
        for full in (False, True):
            # the CPU does the same per-neuron-step work on fewer trials when a case is huge
            work = trials * steps * N * (N if full else 8)
            cpu_trials = int(max(2, min(trials, trials * 2e10 / work)))
            row = {"work": "sampling", "N": N, "mode": "full" if full else "lowrank",
                   "trials": trials, "steps": steps, "cpu_trials": cpu_trials}
            row["cpu_rate"], _ = bench_sampling(N, full, cpu_trials, steps, "cpu", args.repeat)
            if gpu:
                row["cuda_rate"], _ = bench_sampling(N, full, trials, steps, "cuda", args.repeat)
                row["speedup"] = row["cuda_rate"] / row["cpu_rate"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    K = 512 if args.quick else 16384
    for N in ([128] if args.quick else [1024, 2048, 4096]):
        cpu_K = int(max(64, min(K, K * 2e10 / (K * N * N * 4))))
        row = {"work": "Gram pass", "N": N, "K": K, "cpu_K": cpu_K}
        row["cpu_seconds_at_K"] = bench_gram(N, cpu_K, cpu, args.repeat) * K / cpu_K
        if gpu:
            from ddm_numba.backends import cuda
            row["cuda_seconds"] = bench_gram(N, K, cuda, args.repeat)
            row["speedup"] = row["cpu_seconds_at_K"] / row["cuda_seconds"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"cuda": reason, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
