import numpy as np
import pytest

from ddm_numba import fit


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
