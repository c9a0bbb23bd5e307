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
from ddm_numba.matching import DriftData, lowrank_loss_grad, lowrank_packer
from ddm_numba.backends import cuda_loss
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
dev = cuda_loss.DeviceDriftData(data.z, data.u, data.f, data.lam)
l1, g1 = lowrank_loss_grad(theta, packer, data, 1e-3, device_data=dev)
print(json.dumps({"paths": float(np.abs(a.z - b.z).max()), "device": b.meta["device"],
                  "loss": abs(l0 - l1) / abs(l0),
                  "grad": float(np.abs(g0 - g1).max() / np.abs(g0).max())}))
"""


@pytest.mark.slow
def test_api_paths_to_the_cuda_kernels_under_the_simulator():
    """sample_network(device="cuda") and the fit's objective with samples on the device give the
    CPU's numbers (the kernels' own parity tests are in test_cuda_*.py; this checks the wiring)."""
    pytest.importorskip("numba.cuda")
    out = subprocess.run([sys.executable, "-c", INTEGRATION], capture_output=True, text=True,
                         env={**os.environ, "NUMBA_ENABLE_CUDASIM": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["device"] == "cuda"
    assert res["paths"] < 1e-12 and res["loss"] < 1e-12 and res["grad"] < 1e-12
