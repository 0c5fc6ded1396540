r"""Row-wise building blocks of the per-weight passes, each one pass over W.

The mask rule and the backward mask are a dozen elementwise passes over
every weight matrix per step; on the LeNets they cost more than the matrix
products. The passes that broadcast a per-row value (a threshold, a row
norm) are the slow ones in plain NumPy: ``a - v[:, None]`` runs at about
half the speed of ``a - scalar`` (the broadcast inner loop is short and not
vectorised), and ``a.sum(axis=1)`` is 4x slower than a matrix-vector
product with a vector of ones. This module gives the fast equivalents:

* :func:`sub_rows` ``out = a - v[:, None]`` as a rank-1 BLAS update
  (``?ger``) on a copy: ``a + (-1) * v 1^T`` rounds exactly as the
  subtraction does (-v_i * 1 is exact, then one rounding of the sum), so
  the result is bit-identical to NumPy's;
* :func:`row_sums` ``a.sum(axis=1)`` as ``a @ 1`` (BLAS ``?gemv``), equal
  up to summation order;
* :func:`row_dots` ``(a * b).sum(axis=1)`` in one read of a and b;
* :func:`ones` cached read-only vectors of ones;
* :func:`scratch` a reused work array per shape, for intermediates that
  never leave the function that asks for them.

All keep the dtype of their input (float32 stays float32) and never
allocate more than their result.
"""
from __future__ import annotations

import threading
from functools import lru_cache

import numpy as np
from scipy.linalg import blas as _blas

__all__ = ["ones", "sub_rows", "row_sums", "row_dots", "round32", "scratch", "GER_MIN"]

#: Below this many entries the f2py call of ``?ger`` costs more than it saves.
GER_MIN = 16384

_GER = {np.dtype(np.float32): _blas.sger, np.dtype(np.float64): _blas.dger}


@lru_cache(maxsize=64)
def ones(n: int, dtype) -> np.ndarray:
    """A read-only vector of n ones in ``dtype`` (cached)."""
    v = np.ones(int(n), dtype=dtype)
    v.flags.writeable = False
    return v


_local = threading.local()
#: At most this many scratch arrays are kept per thread (the oldest is dropped).
SCRATCH_KEPT = 16


def scratch(shape, dtype, slot: str) -> np.ndarray:
    """A work array of ``shape`` and ``dtype``, the same one each time for the same ``slot``.

    Its content is undefined. For intermediates only: an array that leaves
    the caller (a result, or anything a later step reads) must be a new one,
    since the next call with the same slot overwrites it. Per thread, so two
    threads training two models never share one; at most :data:`SCRATCH_KEPT`
    are kept, which bounds the memory to a few of the largest weights.
    Reusing them spares the page faults of a fresh large allocation and keeps
    the same memory hot in cache from step to step.
    """
    pool = getattr(_local, "pool", None)
    if pool is None:
        pool = _local.pool = {}
    key = (tuple(shape), np.dtype(dtype), slot)
    arr = pool.pop(key, None)
    if arr is None:
        arr = np.empty(key[0], dtype=key[1])
        while len(pool) >= SCRATCH_KEPT:
            pool.pop(next(iter(pool)))
    pool[key] = arr          # most recently used last
    return arr


def sub_rows(a: np.ndarray, v: np.ndarray, out: np.ndarray = None) -> np.ndarray:
    r"""``out = a - v[:, None]`` for a C-contiguous (m, n) ``a`` and (m,) ``v``.

    .. math:: \mathrm{out}_{ij} = a_{ij} - v_i

    ``out`` may be ``a`` itself. Bit-identical to ``np.subtract(a, v[:, None])``.
    """
    if out is None:
        out = np.empty_like(a)
    ger = _GER.get(a.dtype)
    if (ger is None or a.size < GER_MIN or v.dtype != a.dtype or not a.flags.c_contiguous
            or not out.flags.c_contiguous or a.ndim != 2):
        return np.subtract(a, v[:, None], out=out)
    if out is not a:
        np.copyto(out, a)
    # out.T is the Fortran-ordered (n, m) matrix BLAS updates in place:
    # out.T += (-1) * ones(n) v^T, i.e. out[i, j] -= v[i].
    res = ger(-1.0, ones(a.shape[1], a.dtype), v, a=out.T, overwrite_a=1)
    if not np.shares_memory(res, out):       # f2py made a copy: take its result
        np.copyto(out, res.T)
    return out


def row_sums(a: np.ndarray) -> np.ndarray:
    r"""``a.sum(axis=1)`` of a 2-D array as a BLAS matrix-vector product with ones.

    .. math:: r_i = \sum_j a_{ij}

    Same value up to the order of summation; the dtype of ``a``.
    """
    return a @ ones(a.shape[1], a.dtype)


def row_dots(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    r"""Per-row dot products of two (m, n) arrays, without writing their product.

    .. math:: r_i = \sum_j a_{ij} b_{ij}

    ``einsum``'s sum-of-products loop reads both once; ``(a * b).sum(axis=1)``
    would write and read the product again. The dtype of the inputs.
    """
    return np.einsum("ij,ij->i", a, b)


def round32(a: np.ndarray) -> np.ndarray:
    """Round a float64 array to float32 and back, in place (a float32 array is returned as is).

    What autograd does to a gradient that flows into a float32 mask (SPEC,
    "Float32 masks in the reference").
    """
    if a.dtype == np.float32:
        return a
    a[...] = a.astype(np.float32)
    return a
