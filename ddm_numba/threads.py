"""How many numba threads a loop of like calls should use, chosen by timing the calls.

Why. A numba parallel region ends at a barrier that waits for its slowest thread. On a quiet
machine every thread has a core and more threads win (two threads fit lorenz at 512 neurons in
about 60 % of one thread's time). When another job shares the cores, the OS deschedules one of
our threads for a time slice (milliseconds) in the middle of a region, and the others wait for
it at the barrier; an L-BFGS-B evaluation is thousands of such short regions, so the fit
collapses: measured on 2 cores with one competing process, more than 200 s with two threads
against 17.7 s with one. No fixed thread count is right for both cases, and the load comes and
goes while a job runs.

How. The kernels' results do not depend on the thread count (fixed-order reductions, per-trial
random streams), so the count may change freely between calls. A Governor times each call of a
loop (per unit of work) and keeps an exponential average per candidate count: the full count,
then halves down to one thread. After one call to compile and warm up, each candidate is tried
once; from then on every call uses the fastest so far, except a probe now and then, which tries
another candidate so that the choice follows the load as it changes. A probe can be expensive
(under load, the full count may be 10× slower), so a losing probe doubles the interval to the
next one (from PROBE_EVERY calls up to MAX_INTERVAL) and a winning one resets it.
numba.set_num_threads is per calling thread, so governors in different threads (Dask workers) do
not interfere.
"""
import functools
import threading
import time

import numba
from threadpoolctl import threadpool_limits

FIRST_PROBE = 4      # calls before the first try of another thread count
PROBE_EVERY = 16     # calls between probes of another thread count, at first
MAX_INTERVAL = 512   # ... and at most, after losing probes
FORGET = 0.5         # weight of the newest time in each candidate's average

_last = threading.local()   # .choice: the count this thread's last governor settled on


class Governor:
    """Chooses the numba thread count of each call in a loop of like calls (``run``)."""

    def __init__(self, max_threads=None):
        self.max = int(max_threads or numba.get_num_threads())
        counts, t = [self.max], self.max
        while t > 1:
            t //= 2
            counts.append(max(t, 1))
        self.candidates = sorted(set(counts), reverse=True)
        self.average = {}           # threads -> seconds per unit of work (recent)
        self.calls = 0
        self.used = dict.fromkeys(self.candidates, 0)
        self.probes = 0
        self.interval = PROBE_EVERY
        self.next_probe = 1 + FIRST_PROBE   # call 0 may compile; then the start is measured
        # a loop follows another in the same thread (the stages of a fit): start with the count
        # the last one settled on, so that a loaded machine is not found again by slow calls in
        # every stage
        last = getattr(_last, "choice", self.max)
        self.start = min(self.candidates, key=lambda t: abs(t - last))

    def best(self):
        """The fastest count measured so far (before any measurement: the start)."""
        return min(self.average, key=self.average.get) if self.average else self.start

    def probing(self):
        """Whether the next call will try another count than the best: a caller whose calls
        can be of any size (the sampler's chunks) makes that call short, since a probe under
        load may run at a fraction of the best speed."""
        best = self.best()
        return (self.calls >= self.next_probe and best in self.average
                and any(t != best for t in self.candidates))

    def _choose(self):
        """(threads, the count it is compared with if this call is a probe, else None)."""
        best = self.best()
        if not self.probing():
            return best, None
        others = [t for t in self.candidates if t != best]
        self.probes += 1
        untried = [t for t in others if t not in self.average]
        return (untried[0] if untried else others[self.probes % len(others)]), best

    def run(self, fn, *args, work=1.0):
        """fn(*args) with the chosen thread count; ``work``: its size, for calls of unequal size
        (steps of a sampling chunk)."""
        threads, against = self._choose()
        before = numba.get_num_threads()
        numba.set_num_threads(threads)
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            elapsed = (time.perf_counter() - t0) / max(work, 1e-300)
            numba.set_num_threads(before)
            if self.calls > 0:      # the first call may compile: not a measurement
                old = self.average.get(threads)
                self.average[threads] = elapsed if old is None else \
                    FORGET * elapsed + (1 - FORGET) * old
            if against is not None:
                lost = elapsed > 1.5 * self.average[against]
                self.interval = min(2 * self.interval, MAX_INTERVAL) if lost else PROBE_EVERY
                self.next_probe = self.calls + self.interval
            self.calls += 1
            self.used[threads] += 1
            _last.choice = self.best()

    def summary(self):
        """{threads: calls} for the record (meta), and the count chosen last."""
        return {"calls_per_thread_count": {str(t): n for t, n in self.used.items() if n},
                "chosen": int(self.best())}


BLAS_THREADS = 1    # BLAS threads inside a fit (recorded in the model's meta.training)


def one_blas_thread(fn):
    """Run ``fn`` with BLAS (OpenBLAS, MKL) limited to BLAS_THREADS threads.

    Why: multithreaded BLAS splits its sums by thread count, so a fit's numbers depended on it
    (measured: a limit_cycle fit's decoders differed by 4e-4 between OPENBLAS_NUM_THREADS=1 and
    2, and its e_f in the sixth digit). With one BLAS thread a fit is bit-identical whatever the
    BLAS setting and whatever numba's thread count (its kernels reduce in a fixed order), on a
    laptop, a cluster worker or a CI runner. The numba kernels do the heavy work; what BLAS
    does in a fit is small solves and products, except the full-W stage's O(N³) Gram products,
    which now run on one core."""
    @functools.wraps(fn)
    def pinned(*args, **kwargs):
        with threadpool_limits(limits=BLAS_THREADS, user_api="blas"):
            return fn(*args, **kwargs)
    return pinned
