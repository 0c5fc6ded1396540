"""Process-wide settings a training process wants: BLAS threads and the allocator.

Two kinds of call live here, and the difference matters:

* process-wide setters, :func:`set_blas_threads` and :func:`keep_freed_memory`,
  which change the whole Python process (every later NumPy product, a
  notebook's whole kernel). Only the CLI, the run loop and the bench call
  them, because only they own the process;
* one scoped limit, :func:`step_threads`, which any code may use: it limits
  BLAS threads for the duration of a ``with`` block and restores the previous
  counts on exit. The Trainer wraps each step in it, so a library user who
  pins nothing gets the one-thread speed of the CLI without having their
  process changed behind their back.

Why one thread: the LeNets' products are a few hundred microseconds each, too
small to share. OpenBLAS's threads then cost more in synchronisation than
they save (on this project's 2-core machine the default LeNet-300-100 run took
183 s with two threads and 6 s with one; see benchmarks/README.md).

BLAS libraries are found and driven by threadpoolctl (the library
scikit-learn uses for this), which knows OpenBLAS, MKL and BLIS builds.

Determinism: the thread count changes the order of BLAS reductions, so runs
with different counts differ in the last bits from the first step on; the
same count, seed and settings on the same machine give the same numbers.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from typing import Dict, Iterator, Optional

__all__ = ["set_blas_threads", "pinned_blas_threads", "blas_thread_count", "step_threads",
           "keep_freed_memory", "STEP_THREADS"]

#: BLAS threads inside a training step when the process has not been pinned.
STEP_THREADS = 1

_controller = None
_pinned: Optional[int] = None


def _blas_controller():
    """threadpoolctl's view of the loaded BLAS libraries (made once, after scipy's BLAS loads)."""
    global _controller
    if _controller is None:
        import scipy.linalg  # noqa: F401  (loads scipy's own OpenBLAS so it is seen too)
        from threadpoolctl import ThreadpoolController
        _controller = ThreadpoolController().select(user_api="blas")
    return _controller


def set_blas_threads(n: int) -> Dict[str, int]:
    """Pin every loaded BLAS library to ``n`` threads for the rest of the process.

    For the CLI, the run loop and the bench only. Returns the thread count
    each library reports afterwards, by file name.
    """
    global _pinned
    n = int(n)
    if n < 1:
        raise ValueError(f"BLAS threads must be a positive integer, got {n}")
    controller = _blas_controller()
    controller.limit(limits=n)          # not a context: stays in force
    _pinned = n
    return {info["filepath"].rsplit("/", 1)[-1]: int(info["num_threads"]) for info in controller.info()}


def pinned_blas_threads() -> Optional[int]:
    """The count :func:`set_blas_threads` pinned, or None when nobody pinned the process."""
    return _pinned


def blas_thread_count() -> int:
    """Threads the first loaded BLAS library (NumPy's) uses now; 1 when none is found."""
    info = _blas_controller().info()
    return max(1, int(info[0]["num_threads"])) if info else 1


@contextlib.contextmanager
def step_threads(n: Optional[int] = None) -> Iterator[int]:
    """Limit BLAS threads inside the block, restoring the previous counts after it.

    ``n`` None means: leave a pinned process as it is (its owner chose the
    count), otherwise :data:`STEP_THREADS`. Costs about 10 microseconds.
    """
    if n is None:
        if _pinned is not None:
            yield _pinned
            return
        n = STEP_THREADS
    with _blas_controller().limit(limits=int(n)):
        yield int(n)


_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 256 << 20
TRIM_THRESHOLD = 512 << 20
_memory_kept: Optional[bool] = None


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory in the process, so each step reuses the last one's pages.

    A training step allocates and frees the same few-megabyte arrays every
    step. glibc serves blocks above its mmap threshold with fresh ``mmap``
    calls and returns them on ``free``, so every step faults its pages in
    again and the kernel zeroes each one (5-7 ms of a 20-28 ms LeNet-5 step).
    ``mallopt`` raises the mmap threshold to 256 MB and the trim threshold to
    512 MB; resident memory then stays at its peak. Once per process; on a
    libc without ``mallopt`` nothing happens. Returns whether it was set.
    For the CLI, the run loop and the bench only.
    """
    global _memory_kept
    if _memory_kept is not None:
        return _memory_kept
    _memory_kept = False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _memory_kept = (bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
                    and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)))
    return _memory_kept
