"""Roofline of the training kernels: work per call, and the fraction of this machine's measured
peak they reach.

    python benchmarks/bench_roofline.py [--N 1024] [--K 16384] [--repeats 5] [--json roof.json]

Peak, measured here (not taken from a data sheet): float64 matrix product (numpy/OpenBLAS dgemm
on 2048×2048, all cores and one) — the best a dense kernel does on this machine.

Work per call of the low-rank loss+gradient (d latent dimensions, K samples, N neurons), counted
from the code in ddm_numba/backends/cpu.py and ddm_numba/_jit.py:
  tanh evaluations: K N.
  per tanh (φ in _jit.py): 27 floating-point operations (additions, multiplications, an FMA
    counting two) and 1 division — range reduction 7, the Padé parts 12, the assembly 8.
  per (sample, neuron) besides tanh: forward h = c + Σ_j M_ij z_j (2d), the dot products A φ (2d),
    backward δ = (Σ_a A_ai e_a)(1 − φ²) (2d + 3), ∂A (2d), ∂c (1), ∂M (2d): 10 d + 4.
  per sample (O(d), negligible): the residual and e.
So flops ≈ K N (31 + 10 d), divisions K N. The kernel streams nothing large: per block of 256
samples it reads Mᵀ, A, c (O(N d)) and accumulates O(N d) partial gradients, all in L1/L2, so it
is compute-bound and the peak is the roof that applies.
Full mode (FullGram.loss_grad) per evaluation: X = Θ G, 2 N n² flops (n = N + 1 + p), plus
O(N n d) — a dgemm, so its fraction of the dgemm peak is the figure of merit.
Also the cost of one tanh: φ against numpy.tanh and numba's math.tanh, in cache (1024 values).
"""
import argparse
import json
import math
import os
import time

import numba
import numpy as np
from threadpoolctl import threadpool_limits

from ddm_numba.backends.cpu import phi_em_sweep, phi_sweep
from ddm_numba.matching import DriftData, FullGram, lowrank_loss_grad, lowrank_packer
from ddm_numba.network import Network

from _harness import cpu_model, warm_median  # benchmarks/ is on sys.path as a script

FLOPS_PER_TANH = 27


@numba.njit(fastmath={"nsz", "arcp", "contract", "afn", "reassoc"}, error_model="numpy")
def _phi_loop(x, out, reps):
    for r in range(reps):
        phi_sweep(x, out)  # as the kernels call it: two independent chains per iteration


@numba.njit(fastmath={"nsz", "arcp", "contract", "afn", "reassoc"}, error_model="numpy")
def _phi_em_loop(x, out, reps):
    for r in range(reps):
        phi_em_sweep(x, out)  # the samplers' φ̃ (rational, to 1.1e-6)


@numba.njit(error_model="numpy")
def _math_tanh_loop(x, out, reps):
    for r in range(reps):
        for i in range(x.size):
            out[i] = math.tanh(x[i])


def tanh_costs(repeats):
    x = np.random.default_rng(0).standard_normal(1024) * 2
    out = np.empty_like(x)
    reps = 4096
    per = x.size * reps
    res = {}
    res["phi_ns"] = warm_median(lambda: _phi_loop(x, out, reps), repeats) / per * 1e9
    res["phi_em_ns"] = warm_median(lambda: _phi_em_loop(x, out, reps), repeats) / per * 1e9
    res["math_tanh_ns"] = warm_median(lambda: _math_tanh_loop(x, out, reps), repeats) / per * 1e9

    def np_loop():
        for _ in range(reps // 16):
            np.tanh(x, out=out)
    res["numpy_tanh_ns"] = warm_median(np_loop, repeats) / (x.size * (reps // 16)) * 1e9
    return res


def dgemm_peak(repeats):
    a = np.random.default_rng(1).random((2048, 2048))
    flops = 2 * 2048 ** 3
    res = {"dgemm_all_cores_gflops": flops / warm_median(lambda: a @ a, repeats) / 1e9}
    with threadpool_limits(1, user_api="blas"):
        res["dgemm_one_core_gflops"] = flops / warm_median(lambda: a @ a, repeats) / 1e9
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--N", type=int, default=1024)
    ap.add_argument("--K", type=int, default=16384)
    ap.add_argument("--d", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json")
    args = ap.parse_args()
    N, K, d = args.N, args.K, args.d
    rng = np.random.default_rng(0)
    threads = numba.get_num_threads()

    peak = dgemm_peak(args.repeats)
    tanh = tanh_costs(args.repeats)
    print(f"peak (measured): dgemm {peak['dgemm_all_cores_gflops']:.1f} GFLOP/s on {threads} "
          f"threads, {peak['dgemm_one_core_gflops']:.1f} on one")
    print(f"one tanh, in cache, one core: phi {tanh['phi_ns']:.2f} ns, the samplers' phi_em "
          f"{tanh['phi_em_ns']:.2f} ns, numpy.tanh "
          f"{tanh['numpy_tanh_ns']:.2f} ns, numba math.tanh {tanh['math_tanh_ns']:.2f} ns")

    # low-rank loss + gradient (lorenz-like scales do not matter for the count)
    z = rng.uniform(-1, 1, (K, d))
    f = rng.standard_normal((K, d))
    M = rng.standard_normal((N, d))
    c = rng.standard_normal(N)
    A = rng.standard_normal((d, N)) / N
    data = DriftData(z, np.zeros((K, 0)), f, np.ones(d), 1.0)
    packer = lowrank_packer(N, d, 0)
    x = packer.pack({"A": A, "b_z": np.zeros(d), "M": M, "c": c})
    with threadpool_limits(1, user_api="blas"):  # as fit() calls it
        t_lr = warm_median(lambda: lowrank_loss_grad(x, packer, data, 0.0), args.repeats)
        numba.set_num_threads(1)
        t_lr1 = warm_median(lambda: lowrank_loss_grad(x, packer, data, 0.0), args.repeats)
        numba.set_num_threads(threads)
    tanh_evals = K * N
    flops_lr = K * N * (FLOPS_PER_TANH + 4 + 10 * d)
    lr = {"seconds": t_lr, "seconds_one_thread": t_lr1, "tanh_evaluations": tanh_evals,
          "flops": flops_lr, "gflops": flops_lr / t_lr / 1e9,
          "fraction_of_dgemm_peak": flops_lr / t_lr / 1e9 / peak["dgemm_all_cores_gflops"],
          "tanh_share_estimate": tanh_evals * tanh["phi_ns"] * 1e-9 / threads / t_lr,
          "parallel_efficiency": t_lr1 / (threads * t_lr)}
    print(f"\nlow-rank loss+gradient, N={N}, K={K}, d={d}: {1e3 * t_lr:.1f} ms "
          f"({1e3 * t_lr1:.1f} ms on one thread; parallel efficiency "
          f"{lr['parallel_efficiency']:.2f})")
    print(f"  {tanh_evals / 1e6:.1f} M tanh, {flops_lr / 1e9:.2f} GFLOP + {tanh_evals / 1e6:.1f} M "
          f"divisions per call -> {lr['gflops']:.1f} GFLOP/s = "
          f"{100 * lr['fraction_of_dgemm_peak']:.0f}% of the dgemm peak")
    print(f"  tanh alone at phi's in-cache rate would take {100 * lr['tanh_share_estimate']:.0f}% "
          f"of the call")

    # full mode: one evaluation of the Gram-form loss
    net = Network(1.0, M, c, c, np.zeros((d, d)), np.zeros((d, d, N)), W=np.zeros((N, N)))
    gram = FullGram(data, M, c, net.P, 1.0, 1e-8)
    theta = gram.packer.pack({"W": rng.standard_normal((N, N)) / N, "b": c,
                              "B_in": np.zeros((N, 0))})
    t_full = warm_median(lambda: gram.loss_grad(theta), args.repeats)
    n = N + 1
    flops_full = 2 * N * n * n
    full = {"seconds": t_full, "flops": flops_full, "gflops": flops_full / t_full / 1e9,
            "fraction_of_dgemm_peak": flops_full / t_full / 1e9 / peak["dgemm_all_cores_gflops"]}
    print(f"\nfull mode, one evaluation from Gram statistics, N={N}: {1e3 * t_full:.1f} ms, "
          f"{flops_full / 1e9:.2f} GFLOP in X = Θ G -> {full['gflops']:.1f} GFLOP/s = "
          f"{100 * full['fraction_of_dgemm_peak']:.0f}% of the dgemm peak")

    if args.json:
        out = {"machine": {"date": time.strftime("%Y-%m-%d %H:%M"), "cpu": cpu_model(),
                           "cpus": os.cpu_count(), "threads": threads,
                           "numba": numba.__version__, "numpy": np.__version__},
               "sizes": {"N": N, "K": K, "d": d}, "peak": peak, "tanh": tanh,
               "lowrank": lr, "full": full}
        tmp = args.json + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(out, fh, indent=1)
        os.replace(tmp, args.json)


if __name__ == "__main__":
    main()
