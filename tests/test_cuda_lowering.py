"""Every CUDA kernel types and lowers for a real GPU (sm_75) with numba-cuda, with no GPU and the
simulator off; PTX is emitted where NVVM is installed.

The simulator (tests/cuda) accepts code a real GPU compiler rejects, so this runs in the main
pytest process, with numba's CUDA target itself. numba-cuda asks the driver for the current
device's compute capability when it compiles a device function; `monkeypatch` stands in an sm_75
device for the duration of the test. Compiling a kernel caches its device functions' overloads
(lowered for sm_75) on their dispatchers and registers them in the CUDA target context, so the
kernels are compiled from fresh copies of cuda_simulate and cuda_loss loaded for this test alone:
the package's own dispatchers, which later tests (or a real GPU) use, are left untouched.
"""
import importlib.util
import sys
from pathlib import Path

import numba
import numpy as np
import pytest

# compiling the eight kernels takes ~10 s: in the full run (`pytest -m slow`, which .ci/run runs)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("numba.cuda") is None,
                       reason="numba's CUDA target is not installed"),
    pytest.mark.skipif(bool(numba.config.ENABLE_CUDASIM),
                       reason="lowering for a GPU needs the CUDA simulator off"),
]


class Sm75:  # device functions ask the driver for the current device's compute capability
    compute_capability = (7, 5)


def _fresh_copies(monkeypatch):
    """cuda_simulate and cuda_loss executed again as new module objects (under their own names
    in sys.modules while the test runs, so that cuda_loss's `from .cuda_simulate import phi`
    gets the copy; monkeypatch puts the originals back)."""
    import ddm_numba.backends as backends
    copies = {}
    for name in ("cuda_simulate", "cuda_loss"):
        full = f"ddm_numba.backends.{name}"
        spec = importlib.util.spec_from_file_location(full, Path(backends.__file__).with_name(
            f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, full, module)
        spec.loader.exec_module(module)
        copies[name] = module
    return copies["cuda_simulate"], copies["cuda_loss"]


def test_kernels_compile_for_a_gpu(monkeypatch):
    """Every kernel types and lowers for sm_75 (constant-size local/shared arrays, no allocation):
    the simulator alone would not catch code that a GPU compiler rejects."""
    try:
        import numba.cuda.dispatcher as dispatcher
        from numba.cuda.compiler import compile_cuda
    except ImportError as exc:
        pytest.skip(f"numba-cuda internals not as expected: {exc}")
    from numba import boolean, float64, int64, typeof
    from numba.types import Array, Tuple, void

    from ddm_numba.backends.arrays import NetworkArrays, PathArrays, RunSettings

    monkeypatch.setattr(dispatcher, "get_current_device", lambda: Sm75())
    cs, cl = _fresh_copies(monkeypatch)

    C1, C2, A2 = Array(float64, 1, "C"), Array(float64, 2, "C"), Array(float64, 2, "A")
    SIGS = {
        "_lowrank_residual": (Tuple((C2, C2, C2, C1)), A2, A2.copy(ndim=1), A2, A2,
                              A2.copy(ndim=1), float64, int64, C2, C2),
        "_lowrank_neuron_grad": (C2, C2, A2, A2, A2.copy(ndim=1), int64, C2),
        "_sum_rows": (C2, C1, int64),
        "_features": (C2, C2, C2, C1, int64, int64, A2),
        "_weighted_rows": (A2, C2, int64, int64, A2),
        "_gemm_tn": (A2, A2, A2, boolean),
    }
    kernels = {name: (getattr(cl, name), sig) for name, sig in SIGS.items()}
    # the simulation kernel takes backends.arrays' named tuples: their types from host stand-ins
    N, d, m, p, T = 6, 2, 2, 1, 3
    for precision in ("float64", "float32"):
        real = np.dtype(precision).type

        def z(*shape):
            return np.zeros(shape, precision)
        work = (np.zeros((1, 3, 2), np.uint64), z(1, N), z(1, N), z(1, N), p, m, real(0.1))
        net = NetworkArrays(z(d, N), z(N), z(d, N), z(1, 1), False, z(N), z(p, N), z(d, m),
                            z(d, m, N), True, real(0.1), z(d, N), real(1.0))
        run = RunSettings(z(T, p), real(0.01), 4, 2, True)
        paths = PathArrays(z(1, N), np.zeros((1, 2), np.uint64), z(1, T, d), z(1, T, N),
                           np.zeros(1, np.int64))
        kernels[f"simulate_{precision}"] = (cs._kernel(32, precision),
                                            tuple(typeof(a) for a in (work, net, run, paths)))
    result = {}
    for name, (func, sig) in kernels.items():
        try:
            cres = compile_cuda(func.py_func, void, sig, cc=(7, 5), nvvm_options={"opt": 3})
        except Exception as exc:  # typing or lowering: code a real GPU compiler would reject
            result[name] = f"error: {type(exc).__name__}: {str(exc)[:500]}"
            continue
        try:
            cres.library.get_asm_str(cc=(7, 5))
            result[name] = "ptx"
        except Exception:  # no NVVM here (libnvrtc / libnvvm not installed)
            result[name] = "lowered"
    bad = {k: v for k, v in result.items() if v not in ("ptx", "lowered")}
    assert not bad, bad
    assert len(result) == 8 and {"simulate_float64", "simulate_float32"} <= set(result)
