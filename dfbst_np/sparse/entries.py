r"""Two value objects for one (out, fan_in) weight matrix: values on a support, and a 0/1 mask.

The gradient rule and the backward mask are written once, over an
:class:`Entries`: the values of a matrix on a set of its entries. With no
support the set is every entry and the values *are* the (out, fan_in) array
(the exact mode); with a :class:`~dfbst_np.sparse.kernels.Support` they are a
(k,) vector in the support's row-major order and the matrix is 0 elsewhere
(the predicted weight gradient). The per-row operations the rule needs
(row sums, a per-row value subtracted or divided) are the view's methods, so
the rule itself does not branch on the layout.

A :class:`Pattern` is a 0/1 mask (the backward mask D) held as whatever was
cheapest to make (an (out, fan_in) bool array, or the sorted row-major
positions of its ones), with the other forms and the count made when read.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from .fused import row_dots, row_sums, sub_rows

__all__ = ["Entries", "Pattern"]


class Entries:
    """The values of an (out, fan_in) matrix on a support (see the module docstring).

    Attributes
    ----------
    values : (out, fan_in) array when ``support`` is None, else (k,) in the
        support's row-major order.
    support : :class:`~dfbst_np.sparse.kernels.Support` or None (every entry).
    shape : (out, fan_in).
    """

    __slots__ = ("values", "support", "shape")

    def __init__(self, values: np.ndarray, support=None) -> None:
        if support is None and values.ndim != 2:
            raise ValueError(f"Entries: values without a support must be an (out, fan_in) "
                             f"matrix, got shape {values.shape}")
        self.values, self.support = values, support
        self.shape = values.shape if support is None else support.shape

    @property
    def full(self) -> bool:
        """Whether every entry is held (values is then the matrix itself)."""
        return self.support is None

    @property
    def dtype(self):
        return self.values.dtype

    @property
    def size(self) -> int:
        """out * fan_in: the number of entries of the whole matrix."""
        return self.shape[0] * self.shape[1]

    def like(self, values: np.ndarray) -> "Entries":
        """New values on the same support."""
        return Entries(values, self.support)

    def take(self, a2: np.ndarray) -> np.ndarray:
        """An (out, fan_in) array's entries on the support, in this view's layout."""
        if self.full:
            return a2
        flat = a2.reshape(-1) if a2.flags.c_contiguous else a2.ravel()
        return flat.take(self.support.flat)

    def row_sums(self, v: np.ndarray) -> np.ndarray:
        """(out,) per-row sums of v (in this view's layout), 0 for rows without entries."""
        return row_sums(v) if self.full else self.support.row_sums(v)

    def row_dots(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """(out,) per-row sums of u * v (both in this view's layout), 0 for rows without entries.

        For a full matrix one read of u and v and no product written
        (:func:`~dfbst_np.sparse.fused.row_dots`)."""
        return row_dots(u, v) if self.full else self.support.row_sums(np.multiply(u, v))

    def sub_rows(self, v: np.ndarray, r: np.ndarray) -> np.ndarray:
        """v -= r_i on row i's entries, in place (exact: one rounding per entry)."""
        if self.full:
            return sub_rows(v, np.ascontiguousarray(r, dtype=v.dtype), out=v)
        v -= self.support.per_entry(r)
        return v

    def div_rows(self, v: np.ndarray, r: np.ndarray) -> np.ndarray:
        """v /= r_i on row i's entries, in place."""
        if self.full:
            return np.divide(v, r[:, None], out=v)
        v /= self.support.per_entry(r)
        return v

    def total(self, v: np.ndarray):
        """The sum of v (a BLAS product with ones for a full matrix: 3x faster than sum)."""
        return row_sums(v).sum() if self.full else v.sum()

    def pattern(self, keep: np.ndarray, nnz: Optional[int] = None) -> "Pattern":
        """The 0/1 mask that is 1 where ``keep`` (one bool per held entry) is True."""
        if self.full:
            return Pattern(keep=keep, nnz=nnz)
        return Pattern(shape=self.shape, flat=np.compress(keep, self.support.flat))

    def dense(self) -> np.ndarray:
        """The (out, fan_in) matrix, zero off the support (a new array for a support)."""
        if self.full:
            return self.values
        out = np.zeros(self.shape, dtype=self.values.dtype)
        out.reshape(-1)[self.support.flat] = self.values
        return out


class Pattern:
    """A 0/1 mask of an (out, fan_in) matrix (the backward mask D), read in any form.

    Made from an (out, fan_in) bool array ``keep``, or from ``shape`` and the
    sorted row-major positions ``flat`` of its ones; the other form, the
    count and the 0/1 array are made when first read and kept.
    """

    __slots__ = ("shape", "_keep", "_flat", "_nnz", "_dense")

    def __init__(self, keep: Optional[np.ndarray] = None, *, shape: Optional[Tuple[int, int]] = None,
                 flat: Optional[np.ndarray] = None, nnz: Optional[int] = None) -> None:
        if (keep is None) == (flat is None):
            raise ValueError("Pattern: give exactly one of keep (a bool array) or flat (positions)")
        if keep is not None:
            keep = np.asarray(keep)
            if keep.dtype != bool:
                keep = keep != 0
            shape = keep.shape
        elif shape is None:
            raise ValueError("Pattern: positions need the matrix shape")
        self.shape = (int(shape[0]), int(shape[1]))
        self._keep, self._flat = keep, flat
        self._nnz = None if nnz is None else int(nnz)
        self._dense = None

    @property
    def keep(self) -> np.ndarray:
        """(out, fan_in) bool."""
        if self._keep is None:
            keep = np.zeros(self.shape[0] * self.shape[1], dtype=bool)
            keep[self._flat] = True
            self._keep = keep.reshape(self.shape)
        return self._keep

    @property
    def flat(self) -> np.ndarray:
        """Sorted row-major positions of the ones (intp)."""
        if self._flat is None:
            self._flat = np.flatnonzero(self._keep)
        return self._flat

    @property
    def nnz(self) -> int:
        if self._nnz is None:
            self._nnz = int(self._flat.size if self._flat is not None else np.count_nonzero(self._keep))
        return self._nnz

    def dense(self, dtype) -> np.ndarray:
        """The mask as 0/1 numbers in ``dtype``, (out, fan_in) (cached: do not modify)."""
        if self._dense is None or self._dense.dtype != np.dtype(dtype):
            self._dense = self.keep.astype(dtype)
        return self._dense

    def union(self, keep: np.ndarray) -> np.ndarray:
        """``keep | self`` for an (out, fan_in) bool array, as a new bool array."""
        if self._keep is None:
            union = keep.copy()
            union.reshape(-1)[self._flat] = True
            return union
        return np.logical_or(keep, self._keep)
