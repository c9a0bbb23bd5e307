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


def pytest_sessionstart(session):
    """Compile the kernels of d = 1 and d = 2 in two processes at once before the tests start.

    About half of a cold run is numba compiling (serial, one kernel after another in this
    process; the sampler alone takes ~20 s a latent dimension). `ddm_numba.warmup` runs the real
    code paths at a tiny size, so two processes, one per dimension, fill numba's on-disk cache
    in parallel and the tests then load it. Nothing depends on it: with a warm cache it takes a
    few seconds, and if it fails the tests compile what they need themselves.
    DDM_TEST_WARMUP=0 turns it off."""
    import os
    import subprocess
    import sys
    import time
    if os.environ.get("DDM_TEST_WARMUP", "1") == "0" or numba.config.ENABLE_CUDASIM:
        return
    t0 = time.perf_counter()
    code = "import sys; from ddm_numba.warmup import warmup; warmup([int(sys.argv[1])])"
    env = {**os.environ, "NUMBA_NUM_THREADS": "1"}    # one core each: the runs are tiny
    procs = [subprocess.Popen([sys.executable, "-c", code, str(d)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, env=env) for d in (1, 2)]
    failed = []
    for d, proc in zip((1, 2), procs):
        try:
            _, err = proc.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            proc.kill()
            err = "timed out"
        if proc.returncode:
            failed.append(f"d = {d}: {err.strip().splitlines()[-1:] or err}")
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"numba cache warmed for d = 1, 2 in {time.perf_counter() - t0:.0f}s"
                            + (f" (failed: {failed}; the tests compile themselves)" if failed
                               else ""))
