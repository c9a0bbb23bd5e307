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
