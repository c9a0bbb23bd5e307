"""Training speed: ddm_numba's drift loss+gradient against numpy, PyTorch and JAX baselines.

    python benchmarks/bench_training.py [--quick | --sizes 256x4096,1024x16384]
        [--modes lowrank,full] [--frameworks numpy,torch,jax] [--repeats 5] [--threads 2]
        [--chunk 2048] [--json out.json]

Problem (float64): the lorenz target, d = 3; K samples uniform over its box, f = its drift there,
weights λ = 1/var(f), τ = 1; a random embedding M, c (initial_embedding) and ridge decoders A, b_z
(ridge_decoders at λ_A = 1e-8·mean(λ), the penalty matching.fit uses while optimizing), moved off
the ridge optimum by 1% noise on A (and, for full mode, on W = M A and b) — a point in the middle
of an optimization, where no gradient block is ~0 and the relative checks mean something.

  lowrank  loss and gradient in (A, b_z, M, c) — one L-BFGS-B evaluation of the joint stage.
           ddm_numba: matching.lowrank_loss_grad on the packed vector (BLAS held to one thread,
           as matching.fit does around it).
  full     loss and gradient in (W, b) with the embedding fixed, λ⊥ = mean(λ), λ_W = 1e-8·mean(λ).
           ddm_numba: FullGram(...) built once ("one-time Gram pass", O(K N²), reported on its
           own), then FullGram.loss_grad per evaluation (O(N³), independent of K). The baselines
           precompute Φ = tanh(z Mᵀ + c) once too ("features"), then O(K N²) per evaluation.

Every size first checks every framework's loss and each gradient block against ddm_numba
(relative difference <= 1e-9) and refuses to time (exit status 1) if one disagrees. Timing: one
warm-up call ("first call": compilation, JIT tracing), then the median of --repeats calls.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from threadpoolctl import ThreadpoolController  # noqa: E402

from ddm_numba.matching import (DriftData, FullGram, initial_embedding,  # noqa: E402
                                lowrank_loss_grad, lowrank_packer, ridge_decoders, sample_domain)
from ddm_numba.network import Network  # noqa: E402
from ddm_numba.systems import evaluate, get_system  # noqa: E402

import _harness as H  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
import baselines as bl  # noqa: E402

FRAMEWORKS = ("numpy", "torch", "jax")
MODES = ("lowrank", "full")
FULL_SIZES = [(N, K) for N in (256, 1024, 2048) for K in (4096, 16384)]
QUICK_SIZES = [(256, 4096)]
TOL = 1e-9
REG = 1e-8          # λ_A = λ_W = REG · mean(λ) / τ², as matching.fit's joint and full stages
BLAS = ThreadpoolController()   # found once: a per-call threadpool_limits() scan costs ~1 ms


def parse_sizes(text):
    """'256x4096,1024x16384' -> [(256, 4096), (1024, 16384)]."""
    try:
        sizes = [tuple(int(v) for v in item.lower().split("x")) for item in text.split(",")]
    except ValueError:
        raise SystemExit(f"--sizes: write NxK pairs separated by commas, got {text!r}") from None
    if any(len(s) != 2 or min(s) < 4 for s in sizes):
        raise SystemExit(f"--sizes: write NxK pairs (N, K >= 4), got {text!r}")
    return sizes


def parse_list(text, allowed, what):
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad:
        raise SystemExit(f"{what}: unknown {bad[0]!r} (choose from {', '.join(allowed)})")
    return items


def build_problem(N, K, seed):
    """The lorenz problem of the module docstring, in numpy: data, parameters, embedding."""
    system = get_system("lorenz")
    rng = np.random.default_rng([seed, N, K])
    z, _ = sample_domain(system, K, rng)
    f, _ = evaluate(system, z, None)
    lam = 1.0 / f.var(axis=0)
    tau = 1.0
    data = DriftData(z, np.zeros((K, 0)), f, lam, tau)
    reg = REG * float(np.mean(lam)) / tau ** 2
    M, c = initial_embedding(system.domain, N, rng)
    t0 = time.perf_counter()
    A, b_z, _ = ridge_decoders(data, M, c, reg)
    ridge_s = time.perf_counter() - t0
    # off the ridge optimum (where ∂L/∂A ≈ 0 and a relative check on it would test only rounding)
    A = A + 0.01 * np.sqrt(np.mean(A * A)) * rng.standard_normal(A.shape)
    W = M @ A
    W = W + 0.01 * np.sqrt(np.mean(W * W)) * rng.standard_normal(W.shape)
    b = M @ b_z + c
    b = b + 0.01 * np.sqrt(np.mean(b * b)) * rng.standard_normal(N)
    return {"data": data, "reg": reg, "M": M, "c": c, "A": A, "b_z": b_z, "W": W, "b": b,
            "ridge_s": ridge_s}


def check(results, reference, names):
    """Relative differences of each framework's (loss, gradient blocks) against ddm_numba's."""
    ref_loss, ref_grads = reference
    diffs = {}
    for fw, (loss, grads) in results.items():
        diffs[fw] = {"loss": abs(loss - ref_loss) / abs(ref_loss)}
        for name in names:
            diffs[fw][name] = H.relative_difference(grads[name], ref_grads[name])
    return diffs


def run_lowrank(prob, frameworks, args):
    """Warm-up + check, then timings, for the low-rank loss; returns the result row."""
    data, reg = prob["data"], prob["reg"]
    N, d = prob["M"].shape
    prm = {"A": prob["A"], "b_z": prob["b_z"], "M": prob["M"], "c": prob["c"]}
    packer = lowrank_packer(N, d, 0)
    flat = packer.pack(prm)

    def ours():
        with BLAS.limit(limits=1, user_api="blas"):  # as matching.fit runs it
            loss, grad = lowrank_loss_grad(flat, packer, data, reg)
        return loss, packer.unpack(grad)

    npdata = {"z": data.z, "f": data.f, "lam": data.lam, "tau": data.tau}
    calls = {"ddm_numba": ours}
    if "numpy" in frameworks:
        calls["numpy"] = lambda: bl.lowrank_numpy(npdata, prm, reg, chunk=args.chunk)
    if "torch" in frameworks:
        tdata, tprm = bl.as_torch(npdata), bl.as_torch(prm, requires_grad=tuple(prm))
        calls["torch"] = lambda: bl.lowrank_torch(tdata, tprm, reg)
    if "jax" in frameworks:
        jdata, jprm = bl.as_jax(npdata), bl.as_jax(prm)
        calls["jax"] = lambda: bl.lowrank_jax(jdata, jprm, reg)
    return measure(calls, tuple(prm), args, {})


def run_full(prob, frameworks, args):
    """Warm-up + check, then timings, for the full-mode loss; returns the result row."""
    data, reg, M, c = prob["data"], prob["reg"], prob["M"], prob["c"]
    N, d = M.shape
    lam_perp = float(np.mean(data.lam))   # matching.fit: perp_weight (1) · mean(λ)
    net = Network(data.tau, M, c, prob["b"], np.eye(d), np.zeros((d, d, N)), W=prob["W"])
    extra = {}
    t0 = time.perf_counter()
    gram = FullGram(data, M, c, net.P, lam_perp, reg)
    extra["gram_pass_ms"] = 1e3 * (time.perf_counter() - t0)
    flat = gram.packer.pack({"W": prob["W"], "b": prob["b"], "B_in": np.zeros((N, 0))})

    def ours():
        loss, grad = gram.loss_grad(flat)
        return loss, gram.packer.unpack(grad)

    t0 = time.perf_counter()
    H, Phi = bl.full_features(data.z, M, c)
    extra["features_ms"] = 1e3 * (time.perf_counter() - t0)
    # the baselines take the dense projector; the Network no longer stores one
    Q = np.eye(N) - M @ net.P
    npdata = {"H": H, "Phi": Phi, "f": data.f, "lam": data.lam, "P": net.P, "Q": Q,
              "tau": data.tau, "lam_perp": lam_perp}
    prm = {"W": prob["W"], "b": prob["b"]}
    calls = {"ddm_numba": ours}
    if "numpy" in frameworks:
        calls["numpy"] = lambda: bl.full_numpy(npdata, prm, reg, chunk=args.chunk)
    if "torch" in frameworks:
        tdata, tprm = bl.as_torch(npdata), bl.as_torch(prm, requires_grad=tuple(prm))
        calls["torch"] = lambda: bl.full_torch(tdata, tprm, reg)
    if "jax" in frameworks:
        jdata, jprm = bl.as_jax(npdata), bl.as_jax(prm)
        calls["jax"] = lambda: bl.full_jax(jdata, jprm, reg)
    return measure(calls, tuple(prm), args, extra)


def measure(calls, names, args, extra):
    """First calls (the warm-up), the correctness check, then the medians. Exits 1 on a failure."""
    first, outputs = {}, {}
    for fw, fn in calls.items():
        H.settle()
        outputs[fw], seconds = H.first_call(fn)
        first[fw] = 1e3 * seconds
    reference = outputs.pop("ddm_numba")
    diffs = check(outputs, reference, names)
    worst = max((v for fw in diffs.values() for v in fw.values()), default=0.0)
    row = {"check": diffs, "worst_relative_difference": worst, "first_ms": first,
           "loss": reference[0], **extra}
    failed = [(fw, k, v) for fw, dd in diffs.items() for k, v in dd.items() if not v <= TOL]
    if failed:
        row["failed"] = [{"framework": fw, "what": k, "relative_difference": v}
                         for fw, k, v in failed]
        return row
    ms, times = {}, {}
    for fw, fn in calls.items():
        H.settle()
        seconds, all_s = H.median_time(fn, args.repeats)
        ms[fw], times[fw] = 1e3 * seconds, [1e3 * t for t in all_s]
    row["ms"] = ms
    row["times_ms"] = times
    row["speedup"] = {fw: ms[fw] / ms["ddm_numba"] for fw in ms if fw != "ddm_numba"}
    return row


def print_tables(rows, mode, frameworks, repeats):
    rows = [r for r in rows if r["mode"] == mode and "ms" in r]
    if not rows:
        return
    title = {"lowrank": "low-rank loss+gradient (A, b_z, M, c)",
             "full": "full-mode loss+gradient (W, b), fixed embedding"}[mode]
    print(f"\n{title}, lorenz d=3 — ms per evaluation (median of {repeats}); "
          "speed-up = baseline ms / ddm_numba ms")
    head = f"{'N':>6s} {'K':>7s} {'ddm_numba':>10s}" + "".join(f" {fw:>9s}" for fw in frameworks)
    head += " |" + "".join(f" {fw + '/ddm':>10s}" for fw in frameworks)  # time ratios
    print(head)
    for r in rows:
        line = f"{r['N']:6d} {r['K']:7d} {r['ms']['ddm_numba']:10.2f}"
        line += "".join(f" {r['ms'][fw]:9.2f}" for fw in frameworks)
        line += " |" + "".join(f" {r['speedup'][fw]:9.1f}x" for fw in frameworks)
        print(line)
    print("first call (warm-up: compilation / tracing), ms"
          + ("; one-time costs (Gram statistics for ddm_numba, Φ for the baselines), ms"
             if mode == "full" else ""))
    print(f"{'N':>6s} {'K':>7s} {'ddm_numba':>10s}" + "".join(f" {fw:>9s}" for fw in frameworks)
          + (" | gram pass  features" if mode == "full" else ""))
    for r in rows:
        line = f"{r['N']:6d} {r['K']:7d} {r['first_ms']['ddm_numba']:10.1f}"
        line += "".join(f" {r['first_ms'][fw]:9.1f}" for fw in frameworks)
        if mode == "full":
            line += f" | {r['gram_pass_ms']:9.1f} {r['features_ms']:9.1f}"
        print(line)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=None,
                    help="NxK pairs, comma-separated "
                         "(default: N in 256,1024,2048 × K in 4096,16384)")
    ap.add_argument("--quick", action="store_true", help="one small size, 256x4096 (a smoke test)")
    ap.add_argument("--modes", default="lowrank,full", help="lowrank, full or both (default both)")
    ap.add_argument("--frameworks", default=",".join(FRAMEWORKS),
                    help="baselines to run, from numpy,torch,jax (ddm_numba always runs)")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls after the warm-up")
    ap.add_argument("--threads", type=int, default=2,
                    help="threads for numba, torch and BLAS (JAX: 1 or its default)")
    ap.add_argument("--chunk", type=int, default=2048, help="samples per chunk, numpy baselines")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="save every number and the machine here")
    args = ap.parse_args()
    if args.repeats < 1 or args.chunk < 1:
        raise SystemExit("--repeats and --chunk must be >= 1")
    sizes = QUICK_SIZES if args.quick else (parse_sizes(args.sizes) if args.sizes else FULL_SIZES)
    modes = parse_list(args.modes, MODES, "--modes")
    frameworks = parse_list(args.frameworks, FRAMEWORKS, "--frameworks")
    bl.limit_threads(args.threads)
    machine = bl.machine_info(args.threads)
    print(f"{machine['cpu_model']}, {machine['cpu_count']} cores; threads: numba "
          f"{machine['threads']['numba']}, torch {machine['threads']['torch']}, BLAS "
          f"{args.threads}, JAX {machine['threads']['jax']}")
    rows, failures = [], []
    for N, K in sizes:
        prob = build_problem(N, K, args.seed)
        for mode in modes:
            row = (run_lowrank if mode == "lowrank" else run_full)(prob, frameworks, args)
            row.update({"mode": mode, "N": N, "K": K, "ridge_s": prob["ridge_s"]})
            rows.append(row)
            status = "FAILED" if "failed" in row else "ok"
            timing = "" if "ms" not in row else "  ms: " + ", ".join(
                f"{fw} {v:.2f}" for fw, v in row["ms"].items())
            print(f"{mode:8s} N={N:5d} K={K:6d}  check {status} (worst relative difference "
                  f"{row['worst_relative_difference']:.1e}, tolerance {TOL:g}){timing}", flush=True)
            if "failed" in row:
                failures = row["failed"]
                break
        del prob
        if failures:
            break
    for mode in modes:
        print_tables(rows, mode, frameworks, args.repeats)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"benchmark": "training", "machine": machine, "args": vars(args),
                       "tolerance": TOL, "problem": {"system": "lorenz", "d": 3, "tau": 1.0,
                                                     "reg": REG, "lam_perp": "mean(lam)"},
                       "rows": rows}, fh, indent=1)
        print(f"\nsaved {args.json}")
    if failures:
        for f in failures:
            print(f"correctness check failed: {f['framework']} {f['what']} differs from "
                  f"ddm_numba by {f['relative_difference']:.3e} relative (> {TOL:g}); "
                  "refusing to time", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
