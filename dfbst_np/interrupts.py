"""Ctrl-C and SIGTERM held back for a few statements that must not be split.

Python runs a signal's handler between two bytecodes, so a KeyboardInterrupt
can arrive after ``os.open`` has created a file and before the caller has
stored its name; the caller's cleanup then does not know the file exists, and
a temporary file is left behind. :func:`deferred` closes that gap: inside it,
SIGINT and SIGTERM are only recorded, and on exit the previous handlers are
put back and every recorded signal is raised again, so it arrives exactly as
it would have, a few statements later.

Blocking the signals with ``pthread_sigmask`` would not do: it is per thread,
and a signal sent to the process is then delivered to another thread (one of
OpenBLAS's, say), whose C handler still makes the main thread run the Python
handler at its next bytecode. Handlers are process-wide, but this changes them
only for the duration of the block and restores them even if a signal arrives
while it does.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator, List

__all__ = ["deferred"]

_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM") if hasattr(signal, name))


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the ``with`` block ends, then deliver them.

    Outside the main thread (where Python never runs signal handlers) and
    where a handler was installed from C (``signal.getsignal`` gives None, so
    it could not be put back), it does nothing.
    """
    if threading.current_thread() is not threading.main_thread() \
            or any(signal.getsignal(s) is None for s in _SIGNALS):
        yield
        return
    caught: List[int] = []
    previous = {}

    def record(signum, frame):
        caught.append(signum)

    try:
        for s in _SIGNALS:
            # A signal pending from before this call runs ``record`` right after
            # it returns (the handler in force then is the new one): nothing is raised.
            previous[s] = signal.signal(s, record)
        yield
    finally:
        # Every callback runs even if a handler already put back raises (a new signal).
        with contextlib.ExitStack() as restore:
            for s, handler in previous.items():
                restore.callback(signal.signal, s, handler)
        for s in caught:
            signal.raise_signal(s)      # under the handler that was in force before
