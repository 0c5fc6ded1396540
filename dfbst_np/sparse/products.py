r"""The weight products of a masked layer, dense or sparse.

A masked layer (linear, or convolution on im2col columns) reduces to products
of 2-D matrices. With :math:`\hat W = W \odot M` of shape (out, fan_in),
:math:`X_2` of shape (rows, fan_in) and :math:`dY_2` of shape (rows, out):

.. math::
    Y_2 = X_2 \hat W^\top, \qquad
    dX_2 = dY_2 \hat W, \qquad
    A = dY_2^\top X_2 .

* :func:`prepare_weight` builds a :class:`MaskedWeight` once per forward from
  :math:`\hat W` (or, without forming it, from W and the boolean mask M:
  :func:`prepare_masked`); its :meth:`~MaskedWeight.forward` and
  :meth:`~MaskedWeight.backward_data` give :math:`Y_2` and :math:`dX_2`, on the
  dense path (NumPy/BLAS on :math:`\hat W`) or the sparse path (the CSR arrays
  of :math:`\hat W`, built once in the forward from a
  :class:`~dfbst_np.sparse.support.Support` and used by both products through
  scipy's compiled ``csr_matvecs``/``csc_matvecs``; the structure is reused as
  it is when the next step's mask is unchanged, as in evaluation). The
  ``"auto"`` path asks :func:`dfbst_np.sparse.costs.choose_path`.
* :func:`weight_gradient` gives the full :math:`A` by BLAS, and the
  ``dense_*`` functions the products of an unmasked weight; the sampled
  :math:`A` on a support is :mod:`dfbst_np.sparse.sampled`.

Their textbook twins are :func:`dfbst_np.textbook.masked_forward` (:math:`Y_2`)
and :func:`dfbst_np.textbook.masked_backward` (:math:`A` and :math:`dX_2`),
plain ``@`` on :math:`W \odot M`. Both paths give the same numbers up to
floating-point rounding (summation order), keep the input dtype (float32 stays
float32, float64 stays float64) and return C-contiguous arrays. Inputs are
checked, never cast or broadcast.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import scipy.sparse as sp

from ..nn.transpose import transpose_2d
from ..runtime import matmul
from .costs import choose_path
from .paths import check_path, get_default_path
from .support import support_structure

try:    # scipy's compiled kernels behind csr_array @ dense, without the object overhead
    from scipy.sparse import _sparsetools
    _csr_matvecs, _csc_matvecs = _sparsetools.csr_matvecs, _sparsetools.csc_matvecs
except (ImportError, AttributeError):  # pragma: no cover - a scipy without them
    _csr_matvecs = _csc_matvecs = None

__all__ = ["MaskedWeight", "prepare_weight", "prepare_masked", "check_matrix",
           "weight_gradient", "weight_gradient_t", "dense_backward_data",
           "dense_forward_t", "dense_backward_data_t"]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_matrix(a, name: str, cols: Optional[int], dtype=None, where: str = "") -> np.ndarray:
    """``a`` itself if it is a 2-D float32/float64 ndarray (of ``dtype`` and ``cols``
    columns when given); else a TypeError or ValueError naming ``where`` and ``name``."""
    where = f"{where}: " if where else ""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{where}{name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.ndim != 2:
        raise ValueError(f"{where}{name} must be 2-D, got shape {a.shape}")
    if a.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{where}{name} must be float32 or float64, got {a.dtype}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(f"{where}{name} has dtype {a.dtype}, expected {dtype} (no silent casts)")
    if cols is not None and a.shape[1] != cols:
        raise ValueError(f"{where}{name} must have {cols} columns, got shape {a.shape}")
    return a


class MaskedWeight:
    r"""The masked weight :math:`\hat W = W \odot M` of one step, ready to multiply.

    Built once per forward by :func:`prepare_weight` (from :math:`\hat W`) or
    :func:`prepare_masked` (from W and the boolean M, without forming
    :math:`\hat W` unless the dense path needs it); the same object serves the
    forward product and the backward-data product of that step, so the sparse
    structure is built at most once. The object holds a reference to its
    inputs (no copy) on the dense path and until an ``"auto"`` choice is made:
    do not modify them in place before the backward-data product.

    Attributes
    ----------
    path : {"dense", "sparse"}
        The resolved path. An ``"auto"`` weight prepared without ``n_rows``
        decides at its first product, which knows the rows; reading ``path``
        before that decides with the many-rows limit.
    requested : {"dense", "sparse", "auto"}
        What was asked for (after applying the module default).
    shape : tuple (out, fan_in)
    dtype : numpy.dtype
    nnz : int
        Number of stored entries: nonzeros of :math:`\hat W`, or True entries of M.
    density : float
        nnz / (out * fan_in); 0.0 for an empty matrix.
    products : int
        Products per step assumed by an ``"auto"`` choice (1 or 2).
    reused : bool
        Whether the sparse structure was taken from ``previous`` (same mask).
    """

    def __init__(self, w_hat: Optional[np.ndarray] = None, path: Optional[str] = None,
                 n_rows: Optional[int] = None, *, weight: Optional[np.ndarray] = None,
                 pattern: Optional[np.ndarray] = None, nnz: Optional[int] = None,
                 products: int = 2, previous: Optional["MaskedWeight"] = None,
                 transposed: bool = False, support=None) -> None:
        self.transposed = bool(transposed)
        self._support_source = support
        if w_hat is not None:
            check_matrix(w_hat, "w_hat", None, where="prepare_weight")
            weight, pattern = w_hat, w_hat != 0   # NaN counts as nonzero: it propagates on both paths
            nnz = None
        else:
            check_matrix(weight, "weight", None, where="prepare_masked")
            if not (isinstance(pattern, np.ndarray) and pattern.dtype == bool
                    and pattern.shape == weight.shape):
                raise TypeError(f"prepare_masked: pattern must be a bool array of shape "
                                f"{weight.shape}, got {getattr(pattern, 'dtype', type(pattern))}")
        path = check_path(path)
        self.requested = path if path is not None else get_default_path()
        self.shape: Tuple[int, int] = (int(weight.shape[0]), int(weight.shape[1]))
        self.dtype = weight.dtype
        self.products = int(products)
        self._weight, self._pattern = weight, pattern
        self.nnz = int(np.count_nonzero(pattern)) if nnz is None else int(nnz)
        self.density = self.nnz / weight.size if weight.size else 0.0
        self._hat = weight if w_hat is not None else None
        self._previous = previous
        self._csr = None          # (data, indices, indptr) of W_hat
        self._path = None
        self.reused = False
        if self.requested != "auto":
            self._resolve(self.requested)
        elif n_rows is not None:
            self._resolve(self._choose(n_rows))

    def _choose(self, n_rows: Optional[int]) -> str:
        return choose_path(self.density, n_rows, *self.shape, self.dtype, self.products,
                           self.transposed, structure_given=self._support_source is not None)

    def _resolve(self, path: str) -> None:
        """Fix the path and build what it needs (the CSR arrays for sparse)."""
        self._path = path
        if path == "sparse":
            if self.nnz:
                self._csr = self._build()
            self._weight = self._hat = None
        elif self._hat is None:
            self._hat = np.multiply(self._weight, self._pattern)    # W * M, in W's dtype
        self._previous = self._support_source = None

    def _build(self):
        prev = self._previous
        if (prev is not None and prev._support is not None and prev.shape == self.shape
                and prev.nnz == self.nnz and np.array_equal(prev._pattern, self._pattern)):
            support = prev._support
            self.reused = True
        elif self._support_source is not None:
            source = self._support_source
            support = source() if callable(source) else source
        else:
            support = support_structure(self._pattern, self.nnz)
        self._support = support
        data = np.ascontiguousarray(self._weight).reshape(-1).take(support.flat)
        return data, support.cols, support.indptr

    _support = None

    def _resolve_for(self, n_rows: Optional[int]) -> str:
        if self._path is None:
            self._resolve(self._choose(n_rows))
        return self._path

    @property
    def path(self) -> str:
        return self._resolve_for(None)

    def __repr__(self) -> str:
        path = self._path if self._path is not None else "auto (undecided)"
        return (f"MaskedWeight(shape={self.shape}, dtype={self.dtype}, path={path!r}, "
                f"nnz={self.nnz}, density={self.density:.4g})")

    def _spmm(self, transpose: bool, bt: np.ndarray) -> np.ndarray:
        """CSR(W_hat) @ bt (or CSR(W_hat)^T @ bt) for a C-contiguous bt with one row per
        column of the left factor; the result likewise."""
        data, indices, indptr = self._csr
        out, fan_in = self.shape
        n_vecs = bt.shape[1]
        res = np.zeros((fan_in if transpose else out, n_vecs), dtype=self.dtype)
        if _csr_matvecs is not None:
            if transpose:   # the CSR arrays of W_hat are the CSC arrays of W_hat^T
                _csc_matvecs(fan_in, out, n_vecs, indptr, indices, data, bt.reshape(-1), res.reshape(-1))
            else:
                _csr_matvecs(out, fan_in, n_vecs, indptr, indices, data, bt.reshape(-1), res.reshape(-1))
        else:  # pragma: no cover - public API fallback
            m = sp.csr_array((data, indices, indptr), shape=self.shape)
            res = (m.T @ bt) if transpose else (m @ bt)
        return res

    def forward(self, x2: np.ndarray) -> np.ndarray:
        r"""Forward product, X2 (rows, fan_in) -> Y2 (rows, out).

        .. math:: Y_2 = X_2 \hat W^\top = (\hat W X_2^\top)^\top
        """
        out, fan_in = self.shape
        check_matrix(x2, "x2", fan_in, self.dtype, where="MaskedWeight.forward")
        if self._resolve_for(x2.shape[0]) == "dense":
            return matmul(x2, self._hat.T)
        if self._csr is None or x2.shape[0] == 0:
            return np.zeros((x2.shape[0], out), dtype=self.dtype)
        # scipy multiplies by a dense matrix whose rows are contiguous, so the
        # dense operand and the result travel transposed.
        return transpose_2d(self._spmm(False, transpose_2d(x2)))

    def backward_data(self, dy2: np.ndarray) -> np.ndarray:
        r"""Backward-data product, dY2 (rows, out) -> dX2 (rows, fan_in).

        .. math:: dX_2 = dY_2 \hat W = (\hat W^\top dY_2^\top)^\top
        """
        out, fan_in = self.shape
        check_matrix(dy2, "dy2", out, self.dtype, where="MaskedWeight.backward_data")
        if self._resolve_for(dy2.shape[0]) == "dense":
            return matmul(dy2, self._hat)
        if self._csr is None or dy2.shape[0] == 0:
            return np.zeros((dy2.shape[0], fan_in), dtype=self.dtype)
        return transpose_2d(self._spmm(True, transpose_2d(dy2)))

    def forward_t(self, x2t: np.ndarray) -> np.ndarray:
        r"""Forward product in the transposed layout, X2^T (fan_in, rows) -> Y2^T (out, rows).

        .. math:: Y_2^\top = \hat W X_2^\top
        """
        out, fan_in = self.shape
        check_matrix(x2t, "x2t", None, self.dtype, where="MaskedWeight.forward_t")
        if x2t.shape[0] != fan_in:
            raise ValueError(f"MaskedWeight.forward_t: x2t must have {fan_in} rows, got {x2t.shape}")
        if self._resolve_for(x2t.shape[1]) == "dense":
            return matmul(self._hat, x2t)
        if self._csr is None or x2t.shape[1] == 0:
            return np.zeros((out, x2t.shape[1]), dtype=self.dtype)
        return self._spmm(False, np.ascontiguousarray(x2t))

    def backward_data_t(self, dy2t: np.ndarray) -> np.ndarray:
        r"""Backward-data product in the transposed layout, dY2^T (out, rows) -> dX2^T (fan_in, rows).

        .. math:: dX_2^\top = \hat W^\top dY_2^\top
        """
        out, fan_in = self.shape
        check_matrix(dy2t, "dy2t", None, self.dtype, where="MaskedWeight.backward_data_t")
        if dy2t.shape[0] != out:
            raise ValueError(f"MaskedWeight.backward_data_t: dy2t must have {out} rows, got {dy2t.shape}")
        if self._resolve_for(dy2t.shape[1]) == "dense":
            return matmul(self._hat.T, dy2t)
        if self._csr is None or dy2t.shape[1] == 0:
            return np.zeros((fan_in, dy2t.shape[1]), dtype=self.dtype)
        return self._spmm(True, np.ascontiguousarray(dy2t))


def prepare_weight(w_hat: Optional[np.ndarray] = None, path: Optional[str] = None,
                   n_rows: Optional[int] = None, *, weight: Optional[np.ndarray] = None,
                   pattern: Optional[np.ndarray] = None, nnz: Optional[int] = None,
                   products: int = 2, previous: Optional[MaskedWeight] = None,
                   transposed: bool = False, support=None) -> MaskedWeight:
    r"""Build the :class:`MaskedWeight` of one step from :math:`\hat W = W \odot M`.

    Either ``w_hat`` (zeros are the pruned entries), or ``weight`` and a bool
    ``pattern`` (M) without forming :math:`\hat W` (:func:`prepare_masked`).

    Parameters
    ----------
    w_hat : ndarray (out, fan_in), float32 or float64
        The masked weight as a matrix (a conv weight reshaped to
        (out, in*kh*kw)). Zeros are the pruned entries.
    path : {"dense", "sparse", "auto"} or None
        None uses :func:`get_default_path`. ``"auto"`` applies
        :func:`choose_path` to the density of ``w_hat``.
    n_rows : int or None
        Rows of the :math:`X_2` this weight will multiply (batch size times
        output positions); used only by ``"auto"``. None defers an ``"auto"``
        choice to the first product, which takes the rows from its input.
    weight, pattern, nnz, products, previous, transposed, support
        See :func:`prepare_masked`.

    Returns
    -------
    MaskedWeight
    """
    return MaskedWeight(w_hat, path=path, n_rows=n_rows, weight=weight, pattern=pattern, nnz=nnz,
                        products=products, previous=previous, transposed=transposed,
                        support=support)


def prepare_masked(weight: np.ndarray, pattern: np.ndarray, path: Optional[str] = None,
                   n_rows: Optional[int] = None, nnz: Optional[int] = None, products: int = 2,
                   previous: Optional[MaskedWeight] = None, transposed: bool = False,
                   support=None) -> MaskedWeight:
    r"""Build the :class:`MaskedWeight` of :math:`\hat W = W \odot M` from W and a bool M.

    The sparse path gathers W on M's entries (no :math:`\hat W` is formed);
    the dense path forms :math:`\hat W` in one pass. Entries of M where W is 0
    are stored as explicit zeros (the same products).

    Parameters
    ----------
    weight : ndarray (out, fan_in), float32 or float64
    pattern : bool ndarray (out, fan_in)
        M. Neither array may change before the step's last product.
    path, n_rows : as in :func:`prepare_weight`.
    nnz : int, optional
        ``count_nonzero(pattern)`` if the caller already has it.
    products : 1 or 2
        Products this step will run (1 when no input gradient is needed); used
        by ``"auto"``.
    previous : MaskedWeight, optional
        The last step's weight of the same layer: if its mask equals this one
        its sparse structure (indices, row pointers) is reused and only the
        values are gathered again.
    transposed : bool
        The products will be :meth:`MaskedWeight.forward_t` and
        :meth:`MaskedWeight.backward_data_t` (for the ``"auto"`` cost model).
    support : Support, or a function returning it, optional
        The :class:`Support` of ``pattern`` if the caller can make it more
        cheaply than a pass over the pattern (a predicted layer takes it from
        its larger support S); a function is called only if the sparse
        structure is built.
    """
    return prepare_weight(None, path=path, n_rows=n_rows, weight=weight, pattern=pattern, nnz=nnz,
                          products=products, previous=previous, transposed=transposed,
                          support=support)


# --------------------------------------------------------------------------
# dense products (one place, so that they can be timed and chosen; each by
# runtime.matmul, which shares a large one among the process's threads)
# --------------------------------------------------------------------------


def weight_gradient(dy2: np.ndarray, x2: np.ndarray) -> np.ndarray:
    r"""The full weight gradient :math:`A = dY_2^\top X_2`, (out, fan_in), by BLAS.

    ``dy2.T @ x2`` (a transposed left operand) was measured against
    ``(x2.T @ dy2).T`` made contiguous, for the LeNet, VGG and ResNet product
    shapes at 1 and 2 OpenBLAS threads in float32 and float64 (OpenBLAS
    0.3.31, AMD EPYC; table in benchmarks/README.md): the transposed
    left operand was as fast or faster everywhere (up to 7x at 64 x 300 x
    784 in float32, where the other form runs a slow kernel) except on
    LeNet-5's second convolution (rows 4096, 50 x 500), where the other form
    was 2-15 % faster; one form for all keeps the numbers independent of the
    shape. The transposed layout's :func:`weight_gradient_t` behaves the same.
    """
    return matmul(dy2.T, x2)


def weight_gradient_t(dy2t: np.ndarray, x2t: np.ndarray) -> np.ndarray:
    r""":math:`A = dY_2^\top (X_2^\top)^\top` from the transposed layout, (out, fan_in), by BLAS."""
    return matmul(dy2t, x2t.T)


def dense_backward_data(dy2: np.ndarray, w2: np.ndarray) -> np.ndarray:
    r""":math:`dX_2 = dY_2 W_2` for an unmasked weight, by BLAS."""
    return matmul(dy2, w2)


def dense_forward_t(w2: np.ndarray, x2t: np.ndarray) -> np.ndarray:
    r""":math:`Y_2^\top = W_2 X_2^\top` for an unmasked weight (transposed layout), by BLAS."""
    return matmul(w2, x2t)


def dense_backward_data_t(w2: np.ndarray, dy2t: np.ndarray) -> np.ndarray:
    r""":math:`dX_2^\top = W_2^\top dY_2^\top` for an unmasked weight (transposed layout), by BLAS."""
    return matmul(w2.T, dy2t)
