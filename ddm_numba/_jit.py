"""Shared numba helpers: a decorator that caches when it can, and the activation function.

Every kernel in the package is compiled with ``error_model="numpy"`` (divisions vectorize; no
Python ZeroDivisionError checks) and ``cache=True`` when numba can find a writable cache directory.
On a read-only install with no writable HOME numba refuses ``cache=True`` at decoration time
("no locator available"); we then compile without caching instead of failing at import.
"""
from numba import njit

_CACHE_OK = None


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


@kernel(inline="always", fastmath={"contract"})
def phi(x):
    """tanh(x) in a form LLVM can inline and vectorize (``math.tanh`` is an opaque libm call that
    blocks SIMD, and so is ``math.exp``).

    tanh(x) = ε / (ε + 2) with ε = e^{2x} − 1. We clip x to [−20, 20] (tanh(20) rounds to 1.0 in
    float64), put y = 2x / 64 (|y| ≤ 0.625), sum the Taylor series ε₀ = e^y − 1 to degree 17
    (truncation < 1e-19 relative), and square up six times with (1 + ε)² − 1 = ε (2 + ε), which
    keeps the relative accuracy of ε near 0. Max relative error against numpy.tanh: about 1e-15.
    Only multiplies, adds and one division: about 3 ns an element here against 18 for math.tanh.
    Derivative: φ'(x) = 1 − φ(x)².
    """
    y = x if x < 20.0 else 20.0
    y = y if y > -20.0 else -20.0
    y = y * 0.03125
    e = 1.0 + y * (1.0 / 17.0)
    e = 1.0 + y * (1.0 / 16.0) * e
    e = 1.0 + y * (1.0 / 15.0) * e
    e = 1.0 + y * (1.0 / 14.0) * e
    e = 1.0 + y * (1.0 / 13.0) * e
    e = 1.0 + y * (1.0 / 12.0) * e
    e = 1.0 + y * (1.0 / 11.0) * e
    e = 1.0 + y * (1.0 / 10.0) * e
    e = 1.0 + y * (1.0 / 9.0) * e
    e = 1.0 + y * (1.0 / 8.0) * e
    e = 1.0 + y * (1.0 / 7.0) * e
    e = 1.0 + y * (1.0 / 6.0) * e
    e = 1.0 + y * (1.0 / 5.0) * e
    e = 1.0 + y * (1.0 / 4.0) * e
    e = 1.0 + y * (1.0 / 3.0) * e
    e = 1.0 + y * (1.0 / 2.0) * e
    e = y * e
    e = e * (2.0 + e)  # six doublings: e^{2x} = (e^y)^64
    e = e * (2.0 + e)
    e = e * (2.0 + e)
    e = e * (2.0 + e)
    e = e * (2.0 + e)
    e = e * (2.0 + e)
    return e / (e + 2.0)
