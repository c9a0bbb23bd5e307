"""Choosing a device: `auto` never picks the simulator, `cuda` says what is missing."""
import json
import os
import subprocess
import sys

import pytest

from ddm_numba import DDMError, sample_network
from ddm_numba.backends import resolve_device, simulator_enabled


def test_auto_picks_cpu_without_a_gpu_and_says_why():
    if not simulator_enabled():
        from ddm_numba.backends import cuda_status
        usable, _ = cuda_status()
        if usable:
            pytest.skip("a real GPU is present: auto rightly picks CUDA here")
    device, why = resolve_device("auto")
    assert device == "cpu" and "auto: CPU" in why


def test_auto_picks_cpu_under_the_simulator_where_cuda_is_available_is_true():
    code = ("from numba import cuda; from ddm_numba.backends import resolve_device; "
            "import json; print(json.dumps([cuda.is_available(), resolve_device('auto'), "
            "resolve_device('cuda')[0]]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}, check=True)
    available, (auto, why), explicit = json.loads(out.stdout.strip().splitlines()[-1])
    assert available is True                # the simulator claims a GPU …
    assert auto == "cpu" and "simulator" in why   # … and auto does not fall for it
    assert explicit == "cuda"               # an explicit request gets the simulator (tests)


def test_explicit_cuda_without_a_gpu_is_a_clear_error(dw_model):
    if simulator_enabled():
        pytest.skip("under the simulator --device cuda runs")
    from ddm_numba.backends import cuda_status
    if cuda_status()[0]:
        pytest.skip("a real GPU is present")
    with pytest.raises(DDMError, match="cannot run here"):
        sample_network(dw_model, trials=2, time=1, device="cuda")
    with pytest.raises(DDMError, match="float32 sampling is for the CUDA backend"):
        sample_network(dw_model, trials=2, time=1, device="cpu", dtype="float32")
    with pytest.raises(DDMError, match="unknown device"):
        resolve_device("gpu")
    traj = sample_network(dw_model, trials=2, time=1, device="auto")
    assert traj.meta["device"] == "cpu"


INTEGRATION = r"""
import json, numpy as np
from ddm_numba import Network, sample_network
from ddm_numba.matching import DriftData, FullGram, lowrank_loss_grad, lowrank_packer
from ddm_numba.learn.fit import _Ridge
from ddm_numba.backends import cpu, cuda
rng = np.random.default_rng(0)
N, d = 6, 2
M = rng.standard_normal((N, d)); c = rng.standard_normal(N) * 0.3; A = rng.standard_normal((d, N))
meta = {"system": {"name": "t", "d": d, "domain": [[-1, 1], [-1, 1]], "dt": 0.01}}
net = Network(0.8, M, c, M @ np.array([0.1, -0.2]) + c, 0.4 * np.eye(d), np.zeros((d, d, N)),
              A=A, meta=meta)
a = sample_network(net, trials=2, time=0.1, seed=3, device="cpu", record_every=2)
b = sample_network(net, trials=2, time=0.1, seed=3, device="cuda", record_every=2)
K = 16
data = DriftData(rng.standard_normal((K, d)), np.zeros((K, 0)), rng.standard_normal((K, d)),
                 np.array([1.0, 2.0]), 0.8)
packer = lowrank_packer(N, d, 0)
theta = packer.pack({"A": A, "b_z": np.array([0.1, 0.3]), "M": M, "c": c})
l0, g0 = lowrank_loss_grad(theta, packer, data, 1e-3)
data_gpu = DriftData(data.z, data.u, data.f, data.lam, data.tau, backend=cuda)
l1, g1 = lowrank_loss_grad(theta, packer, data_gpu, 1e-3)
# the Gram passes of the full mode (FullGram) and of learning from data (_Ridge, weighted too)
P = np.linalg.solve(M.T @ M, M.T)
G0, G1 = (FullGram(dd, M, c, P, 0.3, 0.0).G for dd in (data, data_gpu))
fold = np.arange(K) % 2 + 1
w = (rng.uniform(0.5, 2, (K, d)), rng.uniform(0.5, 2, (K, d)))
r0, r1 = (_Ridge(M, c, data.z, data.f, fold, data.z, data.f, data.lam, 0.8, weights=w,
                 backend=be) for be in (cpu, cuda))
print(json.dumps({"paths": float(np.abs(a.z - b.z).max()), "device": b.meta["device"],
                  "loss": abs(l0 - l1) / abs(l0),
                  "grad": float(np.abs(g0 - g1).max() / np.abs(g0).max()),
                  "gram": float(np.abs(G0 - G1).max() / np.abs(G0).max()),
                  "ridge": max(float(np.abs(x - y).max() / np.abs(x).max())
                               for x, y in zip(r0.Gs + r0.Cs, r1.Gs + r1.Cs))}))
"""


@pytest.mark.slow
def test_api_paths_to_the_cuda_kernels_under_the_simulator():
    """sample_network(device="cuda"), the fit's objective with samples on the device and the Gram
    passes of the full mode and of learning from data give the CPU's numbers (the kernels' own
    parity tests are in test_cuda_*.py; this checks the wiring)."""
    pytest.importorskip("numba.cuda")
    out = subprocess.run([sys.executable, "-c", INTEGRATION], capture_output=True, text=True,
                         env={**os.environ, "NUMBA_ENABLE_CUDASIM": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["device"] == "cuda"
    assert res["paths"] < 1e-12 and res["loss"] < 1e-12 and res["grad"] < 1e-12
    assert res["gram"] < 1e-12 and res["ridge"] < 1e-12


def test_the_backends_are_twins():
    """backends.cpu and backends.cuda define every primitive under the same name, with the same
    parameters, and backends.select is where a device becomes one of them."""
    pytest.importorskip("numba.cuda")
    import inspect
    from ddm_numba import backends
    from ddm_numba.backends import cpu, cuda
    def parameters(module, name):
        f = getattr(module, name)
        return list(inspect.signature(getattr(f, "py_func", f)).parameters)   # njit: its Python
    for name in backends.PRIMITIVES:
        assert parameters(cpu, name) == parameters(cuda, name), name
    assert backends.select("cpu")[0] is cpu and backends.get("cpu") is cpu
    assert (cpu.NAME, cuda.NAME) == ("cpu", "cuda")
