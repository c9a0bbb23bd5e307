"""tests/cuda: the CUDA kernels run under numba's CUDA simulator, no GPU needed.

The simulator must be switched on (NUMBA_ENABLE_CUDASIM=1) before numba is first imported, so the
files here make sense only in a pytest process started with it: tests/conftest.py leaves this
folder out of any other run, and tests/test_cuda.py (in the full run, `pytest -m slow`) runs
`pytest tests/cuda` in a subprocess with the variable set. To run them directly:

    NUMBA_ENABLE_CUDASIM=1 pytest tests/cuda

Sizes are tiny: the simulator runs each GPU thread as a Python thread (about a millisecond per
thread and step in the simulation kernel once the GIL switch interval is short, see
`short_switch_interval`).
"""
import sys
import threading
import traceback

import numba
import pytest

if not numba.config.ENABLE_CUDASIM:
    # numba is imported already, without the simulator: tests/conftest.py leaves this folder out
    # of `pytest` / `pytest tests`; where it is named on the command line (`pytest tests/cuda`,
    # or one of its files), each file is reported as skipped, not imported
    class _NeedsSimulator(pytest.File):
        def collect(self):
            pytest.skip("tests/cuda needs NUMBA_ENABLE_CUDASIM=1 before numba is imported "
                        "(tests/test_cuda.py runs it so, in `pytest -m slow`)")

    def pytest_pycollect_makemodule(module_path, parent):
        return _NeedsSimulator.from_parent(parent, path=module_path)


if numba.config.ENABLE_CUDASIM:
    from numba.core import types as _types
    from numba.cuda.simulator import kernelapi as _kernelapi
    from numba.np import numpy_support as _numpy_support

    _ALLOCATION_LOCK = threading.Lock()

    def _shared_array(self, shape, dtype, alignment=None):
        """numba-cuda's FakeCUDAShared.array, with its check-then-insert under a lock.

        The simulator keys a block's static shared arrays by the allocating source line and
        creates one on first request: ``get`` then ``self._allocations[caller] = new``. Two
        simulated threads that both pass the ``get`` before either inserts each get an array of
        their own, so the block's threads no longer share memory: a tree reduction then sums
        only its own slots. That happens only when the GIL switches between the two lines, which
        a short switch interval makes likely: `test_cuda_simulate` once saw z = P(x − c) wrong
        by 1.47 with x exact (CI, 2026-12-02), and the loss and Gram kernels showed run-to-run
        differences earlier. A race of the simulator, not of the kernels (on a GPU a shared
        array is one allocation per block), so it is fixed here, for the tests, by holding a
        lock over the lookup. `test_simulator_shares_shared_arrays` shows the race."""
        if alignment is not None or shape == 0:
            return _ORIGINAL_SHARED_ARRAY(self, shape, dtype, alignment)
        if isinstance(dtype, _types.Type):
            dtype = _numpy_support.as_dtype(dtype)
        caller = traceback.extract_stack(sys._getframe())[-2][0:2]   # as the original keys it
        with _ALLOCATION_LOCK:
            res = self._allocations.get(caller)
            if res is None:
                res = _kernelapi.np.empty(shape, dtype)   # (the module's np: see the test)
                self._allocations[caller] = res
        return res

    _ORIGINAL_SHARED_ARRAY = _kernelapi.FakeCUDAShared.array
    _kernelapi.FakeCUDAShared.array = _shared_array


@pytest.fixture(scope="module")
def short_switch_interval():
    """The simulator's threads meet at every syncthreads; with Python's default 5 ms GIL switch
    interval each meeting waits for a switch, which makes a simulation run ~15x slower.

    For the simulation kernel only (test_cuda_simulate.py): the loss and Gram kernels run no
    faster with it. (Their run-to-run differences seen under it earlier were the simulator's
    shared-array race that `_shared_array` above closes.)"""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(interval)
