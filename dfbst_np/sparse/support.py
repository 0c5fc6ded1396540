r"""The support index: a set of entries of an (out, fan_in) matrix in CSR order.

A masked layer keeps its forward mask M, its backward mask D and the
predicted mode's support :math:`S = M \lor D_\mathrm{prev}` as a
:class:`Support`: sorted row-major positions and row pointers, from which
the compressed products (:mod:`dfbst_np.sparse.products`) and the sampled
product (:mod:`dfbst_np.sparse.sampled`) take their indices. It is built
from a bool pattern by :func:`support_structure`, or taken as a subset of a
larger support (:meth:`Support.subset`) without a pass over the matrix.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["Support", "support_structure", "index_dtype"]


def index_dtype(*sizes: int):
    """int32 while every index and count fits, else int64 (scipy's own rule)."""
    return np.int32 if max(sizes, default=0) < np.iinfo(np.int32).max else np.int64


def _flatnonzero(nonzero: np.ndarray, nnz: int) -> np.ndarray:
    """Row-major positions of the True entries of a bool array (``np.flatnonzero``).

    numpy's nonzero takes a branching loop while at most 10% of the entries
    are True and a branch-free one (0.33 ns per entry here) above that. The
    branching loop mispredicts once per True entry, about 15 ns each on this
    machine: between 3% and 10% density that makes it the most expensive part
    of a sparse step. Padding the mask with True entries to just over 10%
    keeps numpy on the branch-free loop (up to 3x faster); the padding's
    positions come last and are cut off.
    """
    n = nonzero.size
    if not 0.03 * n < nnz <= 0.1 * n:
        return np.flatnonzero(nonzero)
    pad = int((0.1 * n - nnz) / 0.9) + 2     # (nnz + pad) / (n + pad) > 0.1
    padded = np.empty(n + pad, dtype=bool)
    padded[:n] = nonzero.reshape(-1)
    padded[n:] = True
    return np.flatnonzero(padded)[:nnz]


class Support:
    r"""A row-major (CSR-ordered) set of entries of an (out, fan_in) matrix.

    Attributes
    ----------
    shape : (out, fan_in)
    flat : intp array (k,)
        Sorted row-major positions ``i * fan_in + j``, in NumPy's own index
        width: the gathers and scatters that use them (``take``, ``a[flat] =``)
        run 1.3-1.7x faster with intp than with int32 indices, which NumPy
        converts first.
    indptr : int32 array (out + 1,) (int64 when the sizes need it)
        Entries of row i are ``flat[indptr[i]:indptr[i + 1]]``.
    cols : int array (k,), the dtype of ``indptr``
        Column j of every entry (the CSR ``indices``, scipy's width).
    rows : intp array (k,)
        Row i of every entry (made on first use).
    """

    __slots__ = ("shape", "flat", "indptr", "_cols", "_rows", "_counts")

    def __init__(self, shape, flat: np.ndarray, indptr: np.ndarray,
                 cols: Optional[np.ndarray] = None) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self.flat, self.indptr, self._cols = flat, indptr, cols
        self._rows = self._counts = None

    @property
    def cols(self) -> np.ndarray:
        """Column j of every entry (the CSR ``indices``; made on first use)."""
        if self._cols is None:
            fan_in = self.shape[1]
            self._cols = (np.remainder(self.flat, fan_in).astype(self.indptr.dtype)
                          if fan_in > 1 else np.zeros(self.flat.size, self.indptr.dtype))
        return self._cols

    @property
    def counts(self) -> np.ndarray:
        """Entries per row."""
        if self._counts is None:
            self._counts = np.diff(self.indptr)
        return self._counts

    @property
    def nnz(self) -> int:
        return int(self.flat.size)

    @property
    def rows(self) -> np.ndarray:
        if self._rows is None:
            self._rows = self.per_entry(np.arange(self.shape[0], dtype=np.intp))
        return self._rows

    def row_sums(self, values: np.ndarray) -> np.ndarray:
        """Per-row sums of ``values`` (one per entry), zero for empty rows."""
        out = self.shape[0]
        if values.size == 0:
            return np.zeros(out, dtype=values.dtype)
        starts = self.indptr[:-1]
        nonempty = self.indptr[1:] > starts
        if nonempty.all():
            return np.add.reduceat(values, starts)
        res = np.zeros(out, dtype=values.dtype)
        idx = np.flatnonzero(nonempty)
        res[idx] = np.add.reduceat(values, starts[idx])
        return res

    def subset(self, keep: np.ndarray) -> "Support":
        """The entries where ``keep`` (one bool per entry) is True, as a Support
        (a compress and a search per row: no pass over the whole matrix)."""
        flat = np.compress(keep, self.flat)     # 5x faster than self.flat[keep] at 50 % True
        starts = np.arange(self.shape[0] + 1, dtype=np.intp) * self.shape[1]
        indptr = np.searchsorted(flat, starts).astype(self.indptr.dtype, copy=False)
        return Support(self.shape, flat, indptr)

    def per_entry(self, v: np.ndarray) -> np.ndarray:
        """``v[rows]``: a per-row vector spread over the entries (``np.repeat``, 4x
        faster than the gather)."""
        return np.repeat(v, self.counts)


def support_structure(pattern: np.ndarray, nnz: Optional[int] = None) -> Support:
    """The :class:`Support` of the True entries of a 2-D bool ``pattern``.

    Positions in intp (NumPy's index width), row pointers and columns in
    int32 while they fit (int64 otherwise), scipy's width. One pass over the
    pattern (nonzero), then work proportional to the number of entries.
    """
    out, fan_in = pattern.shape
    if nnz is None:
        nnz = int(np.count_nonzero(pattern))
    idx = index_dtype(pattern.size, out, fan_in)
    flat = _flatnonzero(pattern, nnz)
    indptr = np.searchsorted(flat, np.arange(out + 1, dtype=np.intp) * fan_in).astype(idx, copy=False)
    return Support((int(out), int(fan_in)), flat, indptr)

