"""Shared numba helpers: a decorator that caches when it can, and the activation function.

Every kernel in the package is compiled with ``error_model="numpy"`` (divisions vectorize; no
Python ZeroDivisionError checks) and ``cache=True`` when numba can find a writable cache directory.
On a read-only install with no writable HOME numba refuses ``cache=True`` at decoration time
("no locator available"); we then compile without caching instead of failing at import.
"""
import sys
import threading
import time

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import event
from numba.extending import intrinsic

from . import interrupt

_CACHE_OK = None


class _CompileNotice(event.Listener):
    """Says when numba compiles (a cache hit raises no "numba:compile" event, so this is real
    compilation: the first use of a kernel with these argument types, or a stale or unwritable
    cache), and lets Ctrl-C act at once while it does (compiling is Python code, safe to unwind).

    One line when a top-level compilation has run for ``delay`` seconds, one when it ends.
    ``stream``: where the lines go (None: silent).
    """

    def __init__(self, stream=sys.stderr, delay=1.0):
        self.stream, self.delay = stream, delay
        self.depth = 0
        self.timer = None
        self.shown = False
        self.t0 = 0.0
        self.announced = False

    def _show(self):
        if self.stream is None or self.depth == 0:
            return
        self.shown = True
        more = "" if self.announced else (" (first use of these kernels with these types; "
                                          "numba caches them, so later runs start at once)")
        self.announced = True
        print(f"compiling numba kernels{more} ...", file=self.stream, flush=True)

    def on_start(self, ev):
        if threading.current_thread() is not threading.main_thread():
            return
        self.depth += 1
        interrupt._raise_now[0] += 1
        if self.depth == 1:
            self.t0 = time.perf_counter()
            self.shown = False
            self.timer = threading.Timer(self.delay, self._show)
            self.timer.daemon = True
            self.timer.start()

    def on_end(self, ev):
        if threading.current_thread() is not threading.main_thread():
            return
        self.depth -= 1
        interrupt._raise_now[0] -= 1
        if self.depth == 0:
            self.timer.cancel()
            if self.shown and self.stream is not None:
                print(f"  ... compiled in {time.perf_counter() - self.t0:.1f}s",
                      file=self.stream, flush=True)


COMPILE_NOTICE = _CompileNotice()
event.register("numba:compile", COMPILE_NOTICE)


def compile_notices(stream):
    """Where compile notices go (None: nowhere). Returns the previous stream."""
    old, COMPILE_NOTICE.stream = COMPILE_NOTICE.stream, stream
    return old


def kernel(**options):
    """``numba.njit`` with ``cache=True`` and ``error_model="numpy"``, falling back to no cache."""
    options.setdefault("error_model", "numpy")

    def wrap(func):
        global _CACHE_OK
        if _CACHE_OK is not False:
            try:
                compiled = njit(cache=True, **options)(func)
                _CACHE_OK = True
                return compiled
            except RuntimeError:  # "cannot cache function ...: no locator available"
                _CACHE_OK = False
        return njit(cache=False, **options)(func)

    return wrap


@intrinsic
def _exp2_int(typingctx, n):
    """2.0**n for an integer-valued float64 n in [0, 1000], made by writing the exponent field:
    bits = (n + 1023) << 52. Exact. The conversion goes through int32 because AVX2 has a packed
    double -> int32 instruction but none for int64 (an int64 conversion is done lane by lane and
    stops the loop from vectorizing)."""
    def codegen(context, builder, signature, args):
        i = builder.sext(builder.fptosi(args[0], ir.IntType(32)), ir.IntType(64))
        i = builder.shl(builder.add(i, ir.Constant(ir.IntType(64), 1023)),
                        ir.Constant(ir.IntType(64), 52))
        return builder.bitcast(i, ir.DoubleType())
    return types.float64(types.float64), codegen


@kernel(inline="always")
def exp2_int(n):
    """2.0**n for an integer-valued float n in [0, 63], from its binary digits: exact, and plain
    arithmetic, so it compiles for CUDA and runs in the CUDA simulator (``_exp2_int`` is an LLVM
    intrinsic and does neither). The GPU builds of ``phi`` use this one; on the CPU it is 1.7x
    slower than the bit-writing intrinsic."""
    p = 1.0
    b = 1.0 if n >= 32.0 else 0.0
    n -= 32.0 * b
    p *= 1.0 + 4294967295.0 * b
    b = 1.0 if n >= 16.0 else 0.0
    n -= 16.0 * b
    p *= 1.0 + 65535.0 * b
    b = 1.0 if n >= 8.0 else 0.0
    n -= 8.0 * b
    p *= 1.0 + 255.0 * b
    b = 1.0 if n >= 4.0 else 0.0
    n -= 4.0 * b
    p *= 1.0 + 15.0 * b
    b = 1.0 if n >= 2.0 else 0.0
    n -= 2.0 * b
    p *= 1.0 + 3.0 * b
    return p * (1.0 + n)


@kernel(inline="always")
def _floor(y):
    """floor(y) as a float. np.floor, not math.floor: numba's math.floor returns an int64, whose
    conversions do not vectorize on AVX2. (CUDA has no np.floor; its build of phi rebinds this.)"""
    return np.floor(y)


# ln 2 split in two: _LN2_HI has 22 significant bits, so n * _LN2_HI is exact for n < 2**31.
_LN2_HI = 0.693145751953125
_LN2_LO = 1.4286068203094173e-06


@kernel(inline="always", fastmath={"contract"})
def phi(x):
    """tanh(x) in a form LLVM can inline and vectorize (``math.tanh`` is an opaque libm call that
    blocks SIMD, and so is ``math.exp``).

    With a = min(|x|, 20) (tanh(20) rounds to 1.0 in float64) and t = 2a:
      1. range reduction: n = round(t / ln 2), r = t − n ln 2 ∈ [−ln2/2, ln2/2] (ln 2 in two
         parts, so r is exact to rounding);
      2. e^r by its [6/6] Padé approximant, written through the even and odd parts of its
         numerator: with s = r², E(s) = 1 + 5s/44 + s²/792 + s³/665280 and
         O(s) = 1/2 + s/66 + s²/15840, e^r ≈ (E + rO)/(E − rO). (Coefficients
         c_k = (12−k)! 6! / (12! k! (6−k)!); error ≈ r¹³ (6!)²/(12! 13!) < 2e-19 here.)
      3. ε = e^t − 1 = [2ⁿ(E + rO) − (E − rO)] / (E − rO), with the numerator written as
         (2ⁿ − 1) E + (2ⁿ + 1) rO: for n = 0 it is exactly 2rO, so tanh keeps its relative
         accuracy near 0 (a plain e^t − 1 would cancel); for n ≥ 1 no term cancels.
      4. tanh a = ε / (ε + 2) = Nm / (Nm + 2 (E − rO)): one division for the whole function.
    2ⁿ is written into the exponent bits (``_exp2_int``; GPU builds rebind it and ``_floor``). Max relative error against numpy.tanh
    about 5e-16 (tests/test_jit.py). Here 1.7 ns an element on one core against 4.1 for the Taylor
    series with six squarings used before (benchmarks/bench_roofline.py) and 18 for
    ``math.tanh``. Derivative: φ'(x) = 1 − φ(x)².
    """
    a = abs(x)
    a = a if a < 20.0 else 20.0
    t = a + a
    n = _floor(t * 1.4426950408889634 + 0.5)
    r = (t - n * _LN2_HI) - n * _LN2_LO
    s = r * r
    E = 1.0 + s * (5.0 / 44.0 + s * (1.0 / 792.0 + s * (1.0 / 665280.0)))
    rO = r * (0.5 + s * (1.0 / 66.0 + s * (1.0 / 15840.0)))
    p = _exp2_int(n)
    num = (p - 1.0) * E + (p + 1.0) * rO
    th = num / (num + 2.0 * (E - rO))
    return th if x >= 0.0 else -th


# The sampler's activation (phi_em): tanh(x) ≈ y P(y²) / Q(y²), y = x clamped to ±PHI_EM_CLAMP,
# P(0) = Q(0) = 1. Coefficients from docs/phi_rational.py (a weighted least-squares fit iterated
# towards the minimax error on [0, 7]); the bound below is checked by tests/test_jit.py.
PHI_EM_CLAMP = 7.0
PHI_EM_ERROR = 1.1e-6         # max |phi_em(x) − tanh(x)| over all x (measured 1.03e-6)
PHI_EM_REL_ERROR = 2e-6       # max |phi_em(x)/tanh(x) − 1| over x ≠ 0 (measured 1.54e-6)
_P1, _P2, _P3 = 0.12321726861265697, 0.0022926944455104533, 3.993836421122208e-06
_Q1, _Q2, _Q3 = 0.45654389172593574, 0.02114997045449034, 0.0001439388597550337
# the same coefficients, lowest power first from s¹, for the numpy/torch/jax copies of φ̃
# (tests/naive.py, benchmarks/baselines.py), so that they follow a change of degree
PHI_EM_P = (_P1, _P2, _P3)
PHI_EM_Q = (_Q1, _Q2, _Q3)


@kernel(inline="always", fastmath={"contract"})
def phi_em(x):
    """tanh(x) for Euler–Maruyama sampling: a [7/6] rational function, to PHI_EM_ERROR.

    φ̃(x) = y P(s) / Q(s), y = clamp(x, ±7), s = y², P and Q of degree 3 with P(0) = Q(0) = 1:
    two clamps, 7 multiply-adds and one division, against about 25 operations for ``phi``.
    |φ̃ − tanh| ≤ 1.1e-6 everywhere and |φ̃/tanh − 1| ≤ 2e-6; φ̃ is odd, monotone and
    φ̃'(0) = 1.
    Why that accuracy is enough (issue 17 asked for a tanh with fewer operations at a stated
    error): the network's drift moves by at most PHI_EM_ERROR · ‖A‖₁ a coordinate. Euler–Maruyama
    at dt = 0.01 has a bias of order dt in every statistic, four orders of magnitude above, and a
    sample of 10⁶ states has a Monte Carlo error of order 10⁻³: no statistic of a sample can see
    the difference (tests/test_simulate.py bounds the gap between paths with φ̃ and with tanh).
    The [11/10] rational used before (5e-10) cost 1.15× the sampling time at N = 1024
    (benchmarks/README.md §2). Training keeps ``phi`` (5e-16): its gradients are checked
    against finite differences and its fits are bit-reproducible.
    NaN stays NaN (as np.clip's), so a state that stopped being finite is not read as saturated.
    The clamp is written with min and max: they compile to vminpd/vmaxpd, where the form
    ``x if x < 7 else 7`` (then the same for −7) compiled to two compares, an and and two blends
    per vector and cost 1.2× the time of the φ̃ + A φ̃ sweep at N = 1024 (benchmarks/README.md §2).
    """
    y = max(min(x, 7.0), -7.0)
    s = y * y
    p = 1.0 + s * (_P1 + s * (_P2 + s * _P3))
    q = 1.0 + s * (_Q1 + s * (_Q2 + s * _Q3))
    return y * p / q
