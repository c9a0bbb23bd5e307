"""The CUDA kernels under numba's CUDA simulator: runs the tests in tests/cuda.

The simulator must be switched on (NUMBA_ENABLE_CUDASIM=1) before numba is first imported, and
this pytest process has imported numba already (tests/conftest.py leaves tests/cuda out of it).
So one test here runs `pytest tests/cuda` in a subprocess with the variable set. If pytest itself
runs under the simulator, tests/cuda is collected directly and this test skips.
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numba
import pytest

ROOT = Path(__file__).resolve().parents[1]


# the CUDA simulator runs a thread-step in ~1 ms: these parity checks (a minute or two) are in the
# full run (`pytest -m slow`, which .ci/run runs) to keep `pytest` < 5 min
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("numba.cuda") is None,
                    reason="numba's CUDA target is not installed")
@pytest.mark.skipif(bool(numba.config.ENABLE_CUDASIM),
                    reason="pytest runs under the simulator: tests/cuda is collected directly")
def test_cuda_kernels_under_the_simulator():
    """Simulation, loss and Gram kernels against their CPU twins, and the API's wiring to them:
    every test in tests/cuda passes (all tiers)."""
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", str(ROOT / "tests" / "cuda"), "-q",
                           "-p", "no:cacheprovider", "-m", "slow or not slow"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, f"pytest tests/cuda (NUMBA_ENABLE_CUDASIM=1) failed:\n{tail}"
    assert " passed" in proc.stdout, tail
