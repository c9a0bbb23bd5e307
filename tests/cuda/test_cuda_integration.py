"""The API's paths to the CUDA kernels, under the simulator: device selection, sample_network
(device="cuda"), the fit's objective with samples on the device and the Gram passes of the full
mode and of learning from data give the CPU's numbers (the kernels' own parity tests are in
test_cuda_simulate.py and test_cuda_loss.py here; this checks the wiring)."""
from types import SimpleNamespace

import numpy as np
import pytest
from numba import cuda as numba_cuda

from ddm_numba import Network, sample_network
from ddm_numba.backends import cpu, cuda, resolve_device
from ddm_numba.learn.fit import _Ridge
from ddm_numba.matching import DriftData, FullGram, lowrank_loss_grad, lowrank_packer

# numpy scalars in the simulator: uint64 wrap-around in xoroshiro (intended)
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

N, d, K = 6, 2, 16


def test_auto_picks_cpu_under_the_simulator_where_cuda_is_available_is_true():
    assert numba_cuda.is_available() is True      # the simulator claims a GPU …
    auto, why = resolve_device("auto")
    assert auto == "cpu" and "simulator" in why   # … and auto does not fall for it
    assert resolve_device("cuda")[0] == "cuda"    # an explicit request gets the simulator (tests)


@pytest.fixture(scope="module")
def model():
    """A small low-rank network and drift samples, drawn in this order from one seed."""
    rng = np.random.default_rng(0)
    M = rng.standard_normal((N, d))
    c = rng.standard_normal(N) * 0.3
    A = rng.standard_normal((d, N))
    meta = {"system": {"name": "t", "d": d, "domain": [[-1, 1], [-1, 1]], "dt": 0.01}}
    net = Network(0.8, M, c, M @ np.array([0.1, -0.2]) + c, 0.4 * np.eye(d),
                  np.zeros((d, d, N)), A=A, meta=meta)
    data = DriftData(rng.standard_normal((K, d)), np.zeros((K, 0)), rng.standard_normal((K, d)),
                     np.array([1.0, 2.0]), 0.8)
    data_gpu = DriftData(data.z, data.u, data.f, data.lam, data.tau, backend=cuda)
    w = (rng.uniform(0.5, 2, (K, d)), rng.uniform(0.5, 2, (K, d)))
    return SimpleNamespace(M=M, c=c, A=A, net=net, data=data, data_gpu=data_gpu, w=w)


def test_sample_network_on_cuda_gives_the_cpu_paths(model):
    a = sample_network(model.net, trials=2, time=0.1, seed=3, device="cpu", record_every=2)
    b = sample_network(model.net, trials=2, time=0.1, seed=3, device="cuda", record_every=2)
    assert b.meta["device"] == "cuda"
    assert float(np.abs(a.z - b.z).max()) < 1e-12


def test_lowrank_objective_with_samples_on_the_device_gives_the_cpu_loss(model):
    packer = lowrank_packer(N, d, 0)
    theta = packer.pack({"A": model.A, "b_z": np.array([0.1, 0.3]), "M": model.M, "c": model.c})
    l0, g0 = lowrank_loss_grad(theta, packer, model.data, 1e-3)
    l1, g1 = lowrank_loss_grad(theta, packer, model.data_gpu, 1e-3)
    assert abs(l0 - l1) / abs(l0) < 1e-12
    assert float(np.abs(g0 - g1).max() / np.abs(g0).max()) < 1e-12


def test_gram_passes_on_cuda_give_the_cpu_statistics(model):
    """The Gram passes of the full mode (FullGram) and of learning from data (_Ridge, weighted
    too)."""
    M, c, data = model.M, model.c, model.data
    P = np.linalg.solve(M.T @ M, M.T)
    G0, G1 = (FullGram(dd, M, c, P, 0.3, 0.0).G for dd in (data, model.data_gpu))
    assert float(np.abs(G0 - G1).max() / np.abs(G0).max()) < 1e-12
    fold = np.arange(K) % 2 + 1
    r0, r1 = (_Ridge(M, c, data.z, data.f, fold, data.z, data.f, data.lam, 0.8, weights=model.w,
                     backend=be) for be in (cpu, cuda))
    ridge = max(float(np.abs(x - y).max() / np.abs(x).max())
                for x, y in zip(r0.Gs + r0.Cs, r1.Gs + r1.Cs))
    assert ridge < 1e-12
