"""A fit is the same file's arrays whatever the BLAS and numba thread counts (issue 14: a sweep
on cluster workers, each pinned to one thread, must reproduce a laptop fit bit for bit).

Each fit runs in a fresh process, because OpenBLAS and numba read their thread counts from the
environment when they start. Before threads.one_blas_thread these fits differed: a limit_cycle
model's decoders by 4e-4 between OPENBLAS_NUM_THREADS=1 and 2 (measured 2026-12-02), so the test
can fail.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

FIT = """
import sys
from ddm_numba import fit
net = fit(sys.argv[1], int(sys.argv[2]), mode=sys.argv[3], seed=1, max_iter=15,
          self_check_time=0, progress=None)
net.save(sys.argv[4])
"""


def _fit_in_process(tmp_path, blas, numba_threads, system, N, mode):
    out = tmp_path / f"{system}_{mode}_blas{blas}_numba{numba_threads}.npz"
    env = {**os.environ, "OPENBLAS_NUM_THREADS": str(blas), "MKL_NUM_THREADS": str(blas),
           "OMP_NUM_THREADS": str(blas), "NUMBA_NUM_THREADS": str(numba_threads)}
    proc = subprocess.run([sys.executable, "-c", FIT, system, str(N), mode, str(out)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return np.load(out)


def _same_arrays(a, b):
    keys = [k for k in a.files if k not in ("meta", "format")]
    assert sorted(keys) == sorted(k for k in b.files if k not in ("meta", "format"))
    differ = [k for k in keys if not np.array_equal(a[k], b[k])]
    assert not differ, f"arrays differ between thread counts: {differ}"


def _case(tmp_path, system, N, mode):
    one = _fit_in_process(tmp_path, 1, 1, system, N, mode)
    two = _fit_in_process(tmp_path, 2, 2, system, N, mode)
    _same_arrays(one, two)


def test_a_low_rank_fit_does_not_depend_on_thread_counts(tmp_path):
    _case(tmp_path, "limit_cycle", 64, "lowrank")


@pytest.mark.slow
def test_a_full_fit_does_not_depend_on_thread_counts(tmp_path):
    _case(tmp_path, "double_well", 64, "full")
