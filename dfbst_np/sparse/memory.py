r"""Keep freed memory in the process: the allocator setting a training loop wants.

A training step allocates and frees the same few-megabyte arrays every step
(im2col matrices, activations, gradients). glibc's malloc serves blocks above
its mmap threshold (128 KB, raised dynamically up to 32 MB) with fresh
``mmap`` calls and returns them to the system on ``free``, and trims the top
of the heap when enough is free; every step then faults its pages in again,
and the kernel zeroes each one. On LeNet-5 (batch 64, one thread) that costs
5-7 ms of a 20-28 ms step, more than all the mask work.

:func:`keep_freed_memory` asks glibc (``mallopt``) to serve blocks up to
256 MB from the heap and to keep up to 512 MB of freed heap memory, so a
step reuses the pages of the previous one. The process's resident memory
then stays at its peak, which is what a training process reaches anyway.
PyTorch's CPU allocations go through the same malloc, so a benchmark in the
same process measures both with the same setting. Not glibc (or no
``mallopt``): nothing happens.
"""
from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 256 << 20
TRIM_THRESHOLD = 512 << 20

_done = None


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds once per process; True if they were set."""
    global _done
    if _done is not None:
        return _done
    _done = False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done
