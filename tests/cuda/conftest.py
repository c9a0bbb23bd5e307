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


@pytest.fixture(scope="module")
def short_switch_interval():
    """The simulator's threads meet at every syncthreads; with Python's default 5 ms GIL switch
    interval each meeting waits for a switch, which makes a simulation run ~15x slower.

    For the simulation kernel only (test_cuda_simulate.py), as before: with it, the loss and Gram
    kernels run no faster and their results under the simulator vary from run to run (seen:
    weighted_gram_statistics over several chunks, the low-rank loss), so the other files keep
    Python's default interval."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(interval)
