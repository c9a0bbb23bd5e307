"""The one exception type users see: its message says what was wrong and what to do."""
import math

import numpy as np


class DDMError(ValueError):
    """Bad input or a failed computation, explained. The CLI prints the message and exits 1."""


def checked_number(value, name, low=None, high=None, integer=False, low_open=False):
    """A finite number within bounds, or a DDMError that names the argument."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise DDMError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if integer and not float(value).is_integer():
        raise DDMError(f"{name} must be a whole number, got {value!r}")
    if not math.isfinite(float(value)):
        raise DDMError(f"{name} must be finite, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise DDMError(f"{name} must be {'>' if low_open else '>='} {low:g}, got {value!r}")
    if high is not None and value > high:
        raise DDMError(f"{name} must be <= {high:g}, got {value!r}")
    return int(value) if integer else float(value)


def positive(value, name, allow_zero=False):
    """``value`` as a finite float > 0 (≥ 0 with allow_zero), or a DDMError that names it.

    Unlike checked_number it takes anything float() takes (numpy scalars, 0-d arrays).
    """
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise DDMError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound, kind = ("≥ 0", "non-negative") if allow_zero else ("> 0", "positive")
        raise DDMError(f"{name} must be finite and {bound} (a {kind} number), got {value!r}")
    return value
