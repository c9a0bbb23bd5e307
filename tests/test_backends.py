"""Choosing a device: `auto` picks the CPU without a GPU, `cuda` says what is missing; the two
backends are twins. (Under the CUDA simulator: tests/cuda/test_cuda_integration.py, where `auto`
is checked not to pick the simulator and the API's paths to the kernels are checked.)"""
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
