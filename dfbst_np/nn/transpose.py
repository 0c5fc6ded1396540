"""A 2-D transposed copy that stays in cache.

NumPy's one-shot ``np.ascontiguousarray(a.T)`` of a tall matrix walks the
destination with the stride of a whole row and misses the cache on almost
every element. Copying a block of source rows at a time keeps the block in
L1 while its columns are scattered into the destination (2-5x faster for the
im2col and batch shapes of the LeNets; see benchmarks/README.md). The numbers
are the same bit for bit: a copy does no arithmetic.

The sparse products (:mod:`dfbst_np.sparse.products`) and the masked
convolutions' layout (:mod:`dfbst_np.nn.fast_im2col`) both use it.
"""
from __future__ import annotations

import numpy as np

__all__ = ["transpose_2d", "BLOCK_BYTES"]

#: Bytes of source rows copied per block: about what stays in L1 while its
#: columns are written to the destination.
BLOCK_BYTES = 32 << 10

#: Small wide matrices (at most this many bytes) go in one copy: NumPy's own
#: copy is already cache-friendly for them.
ONE_SHOT_BYTES = 1 << 20


def transpose_2d(a: np.ndarray) -> np.ndarray:
    """(r, c) -> its transpose (c, r), C-contiguous (a copy); same numbers as ``a.T.copy()``.

    Tall matrices (r > c) and large ones are copied in blocks of whole source
    rows (at least 16); small wide ones in one go.

    Parameters
    ----------
    a : ndarray (r, c), any dtype, any strides

    Returns
    -------
    ndarray (c, r), C-contiguous
    """
    r, c = a.shape
    rows = max(16, BLOCK_BYTES // max(1, c * a.itemsize))
    if rows >= r or (r <= c and a.nbytes <= ONE_SHOT_BYTES):
        return np.ascontiguousarray(a.T)
    out = np.empty((c, r), dtype=a.dtype)
    for k in range(0, r, rows):
        out[:, k:k + rows] = a[k:k + rows].T
    return out
