import importlib.util
from pathlib import Path

import numba
import numpy as np
import pytest

from ddm_numba import fit

# tests/cuda runs the CUDA kernels under numba's CUDA simulator, which must be on before numba is
# first imported (NUMBA_ENABLE_CUDASIM=1): collected only in such a process; otherwise
# tests/test_cuda.py runs it in a subprocess with the variable set
collect_ignore = [] if numba.config.ENABLE_CUDASIM else ["cuda"]


@pytest.fixture(scope="session")
def dw_model():
    """A small double-well network, shared by the tests that need a fitted model."""
    return fit("double_well", 64, seed=0, max_iter=30, progress=None)


@pytest.fixture(scope="session")
def mw_model():
    """A small network with inputs (multiwell, p = 2)."""
    return fit("multiwell", 96, seed=0, max_iter=20, samples=6000, progress=None)


def rel_err(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="session")
def load_example():
    """load_example(name) imports examples/<name>.py as a module (the examples are scripts, not a
    package), so a test can call its run(out_dir, quick=True)."""
    def load(name):
        spec = importlib.util.spec_from_file_location(f"example_{name}",
                                                      EXAMPLES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load

