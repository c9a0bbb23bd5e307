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
