"""Speed of the CPU primitives, with a vectorized-numpy baseline run in the same process.

    python benchmarks/bench_core.py [--repeats 5]

Loss+gradient (low-rank, d = 3, K = 16384) and sampling (neuron-steps per second), for two
network sizes. Medians of --repeats runs after one warm-up call (compilation excluded).
"""
import argparse

import numpy as np

from ddm_numba.matching import DriftData, lowrank_loss_grad, lowrank_packer
from ddm_numba.network import Network
from ddm_numba.simulate import sample_network

from _harness import warm_median  # benchmarks/ is on sys.path when run as a script


def numpy_lowrank(z, f, lam, A, bz, M, c, tau):
    """The same loss and gradient, vectorized numpy (materializes K×N): the baseline."""
    K = len(z)
    ph = np.tanh(z @ M.T + c)
    r = ((ph @ A.T) + bz - z) / tau - f
    loss = np.mean(np.sum(lam * r * r, axis=1))
    e = 2 * lam * r / (K * tau)
    delta = (e @ A) * (1 - ph * ph)
    return loss, e.T @ ph, e.sum(0), delta.T @ z, delta.sum(0)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    d, K, tau = 3, 16384, 1.0
    print(f"loss+gradient, low-rank, d={d}, K={K} (median of {args.repeats})")
    print(f"{'N':>6s} {'ddm_numba ms':>13s} {'numpy ms':>9s} {'speed-up':>9s}")
    for N in (256, 1024):
        z = rng.uniform(-1, 1, (K, d))
        f = rng.standard_normal((K, d))
        lam = np.ones(d)
        M = rng.standard_normal((N, d))
        c = rng.standard_normal(N)
        A = rng.standard_normal((d, N)) / N
        bz = np.zeros(d)
        data = DriftData(z, np.zeros((K, 0)), f, lam, tau)
        packer = lowrank_packer(N, d, 0)
        x = packer.pack({"A": A, "b_z": bz, "M": M, "c": c})
        ours = warm_median(lambda: lowrank_loss_grad(x, packer, data, 0.0), args.repeats)
        ref = warm_median(lambda: numpy_lowrank(z, f, lam, A, bz, M, c, tau), args.repeats)
        l1 = lowrank_loss_grad(x, packer, data, 0.0)[0]
        l2 = numpy_lowrank(z, f, lam, A, bz, M, c, tau)[0]
        assert abs(l1 - l2) < 1e-9 * abs(l2)
        print(f"{N:6d} {1e3 * ours:13.1f} {1e3 * ref:9.1f} {ref / ours:8.1f}x")
    print("\nsampling, low-rank, d=3, 64 trials, 2000 steps (neuron-steps per second)")
    print(f"{'N':>6s} {'ddm_numba':>12s} {'numpy':>12s} {'speed-up':>9s}")
    for N in (256, 1024):
        M = rng.standard_normal((N, d)) / 3
        c = 0.1 * rng.standard_normal(N)
        A = -rng.standard_normal((d, N)) / N
        net = Network(tau, M, c, c, 0.3 * np.eye(d), np.zeros((d, d, N)), A=A,
                      meta={"system": {"dt": 0.01, "domain": [[-1, 1]] * d}})
        trials, steps = 64, 2000
        ours = warm_median(lambda: sample_network(net, trials=trials, time=steps * 0.01,
                                                  seed=0, record_every=10), args.repeats)

        def numpy_em():
            x = np.tile(c, (trials, 1))
            g = np.random.default_rng(0)
            W_low, S = net.M, net.S0
            for _ in range(steps):
                x = x + 0.01 * (-x + (np.tanh(x) @ A.T) @ W_low.T + net.b) \
                    + 0.1 * (g.standard_normal((trials, d)) @ S.T) @ W_low.T
            return x
        ref = warm_median(numpy_em, max(1, args.repeats // 2))
        work = trials * steps * N
        print(f"{N:6d} {work / ours:12.3g} {work / ref:12.3g} {ref / ours:8.1f}x")


if __name__ == "__main__":
    main()
