"""Sizes checked before allocation: a job that cannot fit says so, with the number of bytes,
instead of failing deep inside numpy after minutes of work."""
import os

from .errors import DDMError


def available_bytes():
    """Memory this process can still take: MemAvailable (Linux), else physical pages, else None."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def human(n):
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000.0


def require(nbytes, what, hint):
    """Raise DDMError when ``what`` needs more than the memory available now."""
    avail = available_bytes()
    if avail is not None and nbytes > avail:
        raise DDMError(f"{what} needs about {human(nbytes)} of memory, {human(avail)} is "
                       f"available; {hint}")
