"""Ctrl-C and SIGTERM that lose nothing.

Python runs a signal handler in the main thread between bytecodes. While a numba kernel runs,
there are none, so the default handler's KeyboardInterrupt lands wherever the interpreter next
runs Python code: often inside numba's dispatcher (a ``SystemError ... returned a result with an
exception set`` traceback) and, with the kernel's worker threads still running while the
interpreter unwinds, occasionally a segfault.

So long work runs inside :func:`trap`: the handler only records the signal, and the work checks
:func:`check` at its own safe points — between sampling chunks (each a fraction of a second) and
between loss evaluations of the optimizer — where it raises :class:`Interrupted` with the state
needed to save what was done. A second signal while the first is pending raises at once (for a
stuck user). Inside :func:`raising` (pure Python phases, such as numba compiling a kernel, which
takes seconds), the handler raises at once too.
"""
import contextlib
import signal
import threading

_pending = []        # signal numbers received inside trap(), not yet acted on
_depth = [0]         # nesting of trap()
_raise_now = [0]     # nesting of raising()


class Interrupted(KeyboardInterrupt):
    """The work stopped at a safe point because of SIGINT or SIGTERM.

    ``signum``: the signal; ``exit_code``: 128 + signum (130, 143) as shells expect;
    ``partial``: what the interrupted work leaves to save (e.g. a fit's best parameters), or None;
    ``where``: a few words on what was running.
    """

    def __init__(self, signum, where="", partial=None):
        self.signum = int(signum)
        self.where = where
        self.partial = partial
        super().__init__(self.signum)

    def __str__(self):
        name = signal.Signals(self.signum).name
        return f"interrupted by {name}" + (f" during {self.where}" if self.where else "")

    @property
    def exit_code(self):
        return 128 + self.signum


def _handler(signum, frame):
    if _pending or _raise_now[0]:
        _pending.clear()
        raise Interrupted(signum)
    _pending.append(signum)


def check(where=""):
    """Raise Interrupted if a signal arrived since the last check (a safe point of the work)."""
    if _pending:
        signum = _pending.pop(0)
        _pending.clear()
        raise Interrupted(signum, where)


def pending():
    return bool(_pending)


@contextlib.contextmanager
def trap(signals=(signal.SIGINT,)):
    """Within: the given signals are recorded, and act at the next :func:`check`.

    Installed only in the main thread, and only over Python's default handlers (a host
    application's own handlers are left alone); nested traps share the outer one.
    """
    installed = {}
    if threading.current_thread() is threading.main_thread():
        for sig in signals:
            current = signal.getsignal(sig)
            if current in (signal.default_int_handler, signal.SIG_DFL) or current is _handler:
                if current is not _handler:
                    installed[sig] = current
                    signal.signal(sig, _handler)
    _depth[0] += 1
    try:
        yield
    finally:
        _depth[0] -= 1
        for sig, old in installed.items():
            signal.signal(sig, old)
        if _depth[0] == 0:
            # a signal that arrived after the last safe point still stops the caller
            signals_left = list(_pending)
            _pending.clear()
            if signals_left and installed:
                raise Interrupted(signals_left[0])


@contextlib.contextmanager
def raising():
    """Within: a signal raises Interrupted at once (pure Python work, safe to unwind anywhere)."""
    check()
    _raise_now[0] += 1
    try:
        yield
    finally:
        _raise_now[0] -= 1
