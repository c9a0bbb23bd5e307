"""Cold compilation of the big kernels (issue 17 item 2): seconds from an empty numba cache.

    python benchmarks/bench_compile.py [--dims 1,2] [--baseline PATH] [--json out.json]

Each measurement runs in a fresh process with its own empty NUMBA_CACHE_DIR, so nothing is
loaded from a cache: the first call of the low-rank sampler (``sample_network`` of a low-rank
network, N = 64) and of the low-rank loss + gradient (``lowrank_drift_loss_grad``, K = 4096,
N = 64) at each latent dimension d — d is part of their types (Mᵀ and A as tuples of rows), so
each d is a compilation of its own. The kernels' run time at these sizes is milliseconds; what is
printed is compilation. ``--baseline PATH`` measures another copy of the package the same way
(PATH goes first on PYTHONPATH: a `pip install --target` folder or a checkout), alternating
with this one, for a before/after in one session.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import _harness

CHILD = r"""
import sys, time
import numpy as np
d = int(sys.argv[1])
rng = np.random.default_rng(0)
N = 64
from ddm_numba.backends import cpu
from ddm_numba.network import Network
from ddm_numba import sample_network
M = rng.standard_normal((N, d)); c = rng.standard_normal(N); A = 0.1 * rng.standard_normal((d, N))
from ddm_numba.rng import make_states
make_states(2, 0)                        # the random streams' kernels, shared by every d
net = Network(1.0, M, c, c.copy(), 0.3 * np.eye(d), np.zeros((d, d, N)), 0.0, A=A)
t = time.perf_counter()
sample_network(net, trials=2, time=0.02, seed=0, dt=0.01)
sampler = time.perf_counter() - t
K = 4096
s = cpu.drift_samples(rng.standard_normal((K, d)), np.zeros((K, 0)), rng.standard_normal((K, d)),
                      np.ones(d))
t = time.perf_counter()
cpu.lowrank_drift_loss_grad(s, A, np.zeros(d), np.zeros((d, 0)), M.T.copy(), c, 1.0)
loss = time.perf_counter() - t
print(f"{sampler:.2f} {loss:.2f}")
"""


def measure(d, path):
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        if path:
            env["PYTHONPATH"] = os.pathsep.join([path, env.get("PYTHONPATH", "")])
        out = subprocess.run([sys.executable, "-c", CHILD, str(d)], env=env, capture_output=True,
                             text=True, check=True).stdout.split()
    return float(out[-2]), float(out[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dims", default="1,2")
    ap.add_argument("--baseline", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    machine = _harness.machine_basics()
    print(f"{machine['cpu_model']}, {machine['cpu_count']} cores, {machine['date']}", flush=True)
    copies = [("this", None)] + ([("baseline", args.baseline)] if args.baseline else [])
    rows = []
    print(f"{'copy':9s} {'d':>2s} {'sampler s':>10s} {'loss s':>8s}", flush=True)
    for d in (int(v) for v in args.dims.split(",")):
        for name, path in copies:
            sampler, loss = measure(d, path)
            rows.append({"copy": name, "d": d, "sampler_s": sampler, "loss_s": loss})
            print(f"{name:9s} {d:2d} {sampler:10.1f} {loss:8.1f}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": machine, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
