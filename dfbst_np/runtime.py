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
  process changed behind their back;
* inside that limit, :func:`product_threads` lifts it again for one product
  large enough to share (at least :data:`SHARE_MACS` multiply-adds, such as
  LeNet-5's convolutions at batch 256) to the threads the process had before
  the step, and restores it after the product.

Why one thread around them: with every thread on for the whole step,
OpenBLAS's idle threads keep spinning between products while NumPy's
single-threaded passes and the small products run (and scipy's own OpenBLAS
keeps a pool of its own), so the step gets slower, not faster (on this
project's 2-core machine the default LeNet-300-100 run took 183 s with two
threads and 6 s with one; see benchmarks/README.md). A product of a few
million multiply-adds already runs 1.5-1.9x faster on both cores when only
it gets them, but a shared product rounds differently: the threshold is set
so that the default runs (LeNet-300-100 at batch 64) share nothing, and a
notebook that trains with nothing pinned computes the numbers of the
command line, which pins one thread.

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
           "product_threads", "threads_for", "matmul", "keep_freed_memory", "STEP_THREADS", "SHARE_MACS"]

#: BLAS threads inside a training step when the process has not been pinned.
STEP_THREADS = 1
#: Multiply-adds from which one product inside :func:`step_threads`' own limit
#: runs on every thread the process had before the step (a few milliseconds of
#: one core: LeNet-5's convolutions, LeNet-300-100's fc1 at batch 256, none of
#: LeNet-300-100's products at batch 64; 2^22 was faster but changed the
#: default run's numbers: benchmarks/README.md, "Which products share the cores").
SHARE_MACS = 1 << 25

_controller = None
_pinned: Optional[int] = None
# Threads a product of SHARE_MACS or more may use inside the step limit in
# force (None: no step limit of ours is in force, or it took nothing away).
_share: Optional[int] = None
_NO_CHANGE = contextlib.nullcontext()


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
    libs = _blas_controller().lib_controllers
    return max(1, int(libs[0].num_threads)) if libs else 1


@contextlib.contextmanager
def _limited(n: int) -> Iterator[None]:
    """Every loaded BLAS library at ``n`` threads inside the block, each restored after it.

    threadpoolctl's own ``limit`` context does the same but first collects
    every library's full description (tens of microseconds); this asks each
    library only for its count.
    """
    libs = _blas_controller().lib_controllers
    before = [lib.num_threads for lib in libs]
    try:
        for lib in libs:
            lib.set_num_threads(n)
        yield
    finally:
        for lib, k in zip(libs, before):
            lib.set_num_threads(k)


@contextlib.contextmanager
def step_threads(n: Optional[int] = None) -> Iterator[int]:
    """Limit BLAS threads inside the block, restoring the previous counts after it.

    ``n`` None means: leave a pinned process as it is (its owner chose the
    count), otherwise :data:`STEP_THREADS`. Costs about 10 microseconds.
    Inside the block, :func:`product_threads` gives a product of at least
    :data:`SHARE_MACS` multiply-adds the threads the process had before it.
    """
    global _share
    if n is None:
        if _pinned is not None:
            yield _pinned
            return
        n = STEP_THREADS
    n = int(n)
    every = blas_thread_count()
    saved, _share = _share, (every if every > n else None)
    try:
        with _limited(n):
            yield n
    finally:
        _share = saved


def threads_for(macs: float) -> int:
    """BLAS threads a product of ``macs`` multiply-adds runs on here, now.

    Inside :func:`step_threads`' own limit: the process's threads before the
    step for a product of at least :data:`SHARE_MACS`, else the limit;
    elsewhere whatever BLAS uses now. The cost model of
    :mod:`dfbst_np.sparse.costs` divides a dense product's time by it.
    """
    if _share is not None and macs >= SHARE_MACS:
        return _share
    return blas_thread_count()


def product_threads(macs: float):
    """Context for one product of ``macs`` multiply-adds: inside :func:`step_threads`'
    own limit, a product of at least :data:`SHARE_MACS` runs on the threads the
    process had before the step (restored after it); anything else is left as
    it is. Costs nothing below the size, a few microseconds above it.
    """
    if _share is None or macs < SHARE_MACS:
        return _NO_CHANGE
    return _limited(_share)


def matmul(a, b):
    """``a @ b`` of two 2-D arrays by BLAS, inside :func:`product_threads` for its size.

    The dense products of the layers go through it, so that inside a step only
    the large ones are shared among threads.
    """
    with product_threads(a.shape[0] * a.shape[1] * b.shape[1]):
        return a @ b


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
