"""Two processes at once: compiling into the same empty numba cache, writing the same output.

Slow (each process compiles the kernels it needs from nothing, tens of seconds on 2 cores): run
with ``pytest -m slow``.
"""
import os
import subprocess
import sys

import pytest

from ddm_numba import load_model

pytestmark = pytest.mark.slow


def _start(args, cwd, env):
    return subprocess.Popen([sys.executable, "-m", "ddm_numba_cli.main", *args], cwd=cwd,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_compile_one_cache_and_write_one_file(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    args = ["fit", "double_well", "--neurons", "16", "--max-iter", "3", "--samples", "2000",
            "--out", "m.npz"]
    procs = [_start(args + ["--seed", str(seed)], tmp_path, env) for seed in (0, 1)]
    results = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err
    # one valid model, from one of the two (whole, never a mix: atomic rename)
    net = load_model(tmp_path / "m.npz")
    assert net.meta["training"]["seed"] in (0, 1)
    assert not list(tmp_path.glob(".tmp-*"))
    # the cache both wrote is usable: a third process compiles nothing
    third = _start(args + ["--out", "m2.npz"], tmp_path, env)
    out, err = third.communicate(timeout=600)
    assert third.returncode == 0 and "compiling numba kernels" not in err, err
