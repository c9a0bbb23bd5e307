"""Shared by the benchmark scripts: timing, thread limits and a description of the machine.

numpy only (numba and threadpoolctl imported where needed): a script that compares no
framework runs without PyTorch or JAX installed. baselines.py builds its framework-specific
pieces (torch threads, framework versions) on these.

Scripts import it as ``import _harness`` (benchmarks/ is on sys.path when a script runs).
"""
import datetime
import os
import platform
import statistics
import time

import numpy as np


# -- timing -----------------------------------------------------------------------------------

def first_call(fn):
    """(result, seconds) of one call: the warm-up (numba/XLA compilation, caches, allocator).

    Reported on its own, never mixed into the medians; its result feeds the correctness checks.
    """
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def median_time(fn, repeats):
    """(median seconds, all seconds) of ``repeats`` calls after the warm-up (time.perf_counter)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return (statistics.median(times) if times else float("nan")), times


def warm_median(fn, repeats):
    """Median seconds of ``repeats`` calls after one untimed warm-up call (compilation)."""
    fn()
    return median_time(fn, repeats)[0]


def settle():
    """Let idle BLAS/OpenMP worker threads of the previous framework stop spin-waiting (they
    spin for up to ~0.1 s after a call and would steal cores from the next one being timed)."""
    time.sleep(0.25)


def relative_difference(value, reference):
    """‖value − reference‖ / ‖reference‖ (Frobenius; absolute when the reference is zero)."""
    value, reference = np.asarray(value, dtype=float), np.asarray(reference, dtype=float)
    den = float(np.linalg.norm(reference))
    num = float(np.linalg.norm(value - reference))
    return num / den if den > 0 else num


# -- threads ----------------------------------------------------------------------------------

def limit_threads(threads):
    """Use at most ``threads`` threads in numba and BLAS (and in JAX when threads = 1).

    JAX: XLA reads XLA_FLAGS when its CPU backend starts (importing jax does not start it), so
    this must come before the first JAX computation; XLA has no flag for "n threads" other than
    1. BLAS: threadpoolctl limits the libraries loaded so far, so import a framework first for
    its own BLAS/OpenMP to be limited too (baselines.limit_threads does). The limits hold for the
    rest of the process. Returns ``threads`` as an int.
    """
    import numba
    import threadpoolctl
    threads = int(threads)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if threads == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen"
                                   "=false intra_op_parallelism_threads=1").strip()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    threadpoolctl.threadpool_limits(limits=threads, user_api="blas")  # no restore: process-wide
    return threads


def blas_threads():
    """The BLAS/OpenMP libraries loaded in this process and their thread counts."""
    import threadpoolctl
    return [{"lib": i["prefix"], "api": i["internal_api"], "threads": i["num_threads"]}
            for i in threadpoolctl.threadpool_info()]


# -- the machine ------------------------------------------------------------------------------

def cpu_model():
    """The CPU's model name (/proc/cpuinfo), else platform.processor(), else "unknown"."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def now():
    """The local date and time with its UTC offset, to the second (ISO 8601)."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def machine_basics():
    """Date, platform, Python, CPU model and count: the part every --json file records."""
    return {"date": now(), "platform": platform.platform(),
            "python": platform.python_version(), "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count()}
