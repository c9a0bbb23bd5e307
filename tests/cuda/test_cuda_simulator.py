"""The test harness's own repair of the CUDA simulator (conftest.py, `_shared_array`).

Every simulated thread of a block must see the same static shared array. numba-cuda's simulator
creates it on first request without a lock (look up, allocate, insert), so two threads that both
look up before either inserts each get an array of their own; conftest.py makes the lookup and
insert one locked step. The race window is the allocation; here it is widened on purpose (the
simulator's np.empty made to sleep 2 ms), which makes the unlocked simulator fail every launch
(measured: 5 wrong sums in 5 launches with the original lookup put back), so the test can fail.
"""
import time
import types

import numpy as np
import pytest
from numba import cuda
from numba.cuda.simulator import kernelapi

TPB = 8


@cuda.jit
def _block_sum(out):
    buf = cuda.shared.array(TPB, np.float64)
    t = cuda.threadIdx.x
    buf[t] = t + 1.0
    cuda.syncthreads()
    if t == 0:
        s = 0.0
        for i in range(TPB):
            s += buf[i]
        out[0] = s


@pytest.fixture
def slow_allocation(monkeypatch):
    """kernelapi's np, with an np.empty that sleeps first: every thread reaches the lookup while
    the first is still allocating."""
    def empty(*args, **kwargs):
        time.sleep(0.002)
        return np.empty(*args, **kwargs)
    shim = types.SimpleNamespace(**{k: getattr(np, k) for k in dir(np) if not k.startswith("__")})
    shim.empty = empty
    monkeypatch.setattr(kernelapi, "np", shim)


def test_simulator_shares_shared_arrays(slow_allocation):
    for _ in range(5):
        out = np.zeros(1)
        _block_sum[1, TPB](out)
        # every thread's slot, once: 1 + 2 + … + TPB
        assert out[0] == TPB * (TPB + 1) / 2, out[0]
