r"""The sampled weight-gradient product (SDDMM): :math:`A = dY_2^\top X_2` on a support only.

The predicted mode of DFBST needs the weight gradient only on a support
(e.g. :math:`S = M \lor D_\mathrm{prev}`), never the full (out, fan_in)
matrix. For each support entry :math:`(r_k, c_k)`:

.. math:: a_k = A_{r_k c_k} = \sum_n dY_{2,\,n r_k}\, X_{2,\,n c_k}

Two kernels compute it, the same numbers up to rounding:

* ``"sparse"``, gathering: the two operand rows of every entry and their dot
  product (work proportional to the support);
* ``"dense"``, blocked: A by BLAS one block of rows at a time, only for blocks
  that hold support entries, keeping those entries (A is never formed whole).

``"auto"`` compares the support fraction with
:func:`dfbst_np.sparse.costs.sampled_crossover`. The textbook twin is the
full :math:`A` of :func:`dfbst_np.textbook.masked_backward` read on the
support, ``A[rows, cols]``.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..nn.transpose import transpose_2d
from .costs import dots_are_cheaper, sampled_crossover
from .paths import resolve_path
from .products import check_matrix
from .support import Support

__all__ = ["sampled_product", "sampled_product_csr", "sampled_product_dense"]

# Each gathered operand chunk stays about this size so that both chunks sit
# in L2 (4 MB chunks were 4x slower than 1 MB ones).
_CHUNK_BYTES = 1 << 20
_MIN_CHUNK = 8
# The blocked kernel computes A in row blocks of about this many bytes:
# OpenBLAS loses speed on short blocks, and whole A costs memory.
_BLOCK_BYTES = 640 << 10


def _check_sampled(dy2, x2, rows, cols, where):
    check_matrix(dy2, "dy2", None, where=where)
    check_matrix(x2, "x2", None, dy2.dtype, where=where)
    if x2.shape[0] != dy2.shape[0]:
        raise ValueError(f"{where}: dy2 {dy2.shape} and x2 {x2.shape} must have the same rows")
    out, fan_in = dy2.shape[1], x2.shape[1]
    rows, cols = np.asarray(rows), np.asarray(cols)
    for name, idx, bound in (("rows", rows, out), ("cols", cols, fan_in)):
        if idx.ndim != 1 or not (np.issubdtype(idx.dtype, np.integer) or idx.size == 0):
            raise TypeError(f"{where}: {name} must be a 1-D integer array, "
                            f"got {idx.dtype} of shape {idx.shape}")
        # negative indices would wrap around silently under fancy indexing
        if idx.size and (idx.min() < 0 or idx.max() >= bound):
            raise ValueError(f"{where}: {name} must lie in [0, {bound}), "
                             f"got range [{idx.min()}, {idx.max()}]")
    if rows.shape != cols.shape:
        raise ValueError(f"{where}: rows {rows.shape} and cols {cols.shape} must have the same length")
    return rows.astype(np.intp, copy=False), cols.astype(np.intp, copy=False), out, fan_in


def _sampled_path(path, k, n, out, fan_in, dtype, transposed: bool = False) -> str:
    path = resolve_path(path)
    if path != "auto":
        return path
    numel = out * fan_in
    frac = k / numel if numel else 0.0
    if frac == 0:
        return "sparse"
    return "sparse" if frac < sampled_crossover(n, out, fan_in, dtype, transposed) else "dense"


def _gathered_t(dyt, xt, rows, cols, values):
    """values[k] = dyt[rows[k]] . xt[cols[k]] for C-contiguous dY2^T and X2^T.

    Short rows (a batch of a linear layer): gather both rows of every entry in
    chunks of ~1 MB and take the row-wise dot products with einsum. The
    gathers are ``take(..., axis=0)`` into reused buffers: 2.5x faster than
    fancy indexing ``dyt[rows]`` for rows of 64 float32. Long rows (the
    positions of a convolution): one BLAS dot product per entry, no copies.
    """
    n, k = dyt.shape[1], rows.size
    if dots_are_cheaper(dyt.dtype, n):
        for e, (r, col) in enumerate(zip(rows.tolist(), cols.tolist())):
            values[e] = np.dot(dyt[r], xt[col])
        return values
    chunk = min(k, max(_MIN_CHUNK, _CHUNK_BYTES // max(1, n * dyt.itemsize)))
    left = np.empty((chunk, n), dtype=dyt.dtype)
    right = np.empty((chunk, n), dtype=xt.dtype)
    for s in range(0, k, chunk):
        e = min(k, s + chunk)
        a, b = left[:e - s], right[:e - s]
        dyt.take(rows[s:e], axis=0, out=a, mode="clip")     # "raise" would buffer out
        xt.take(cols[s:e], axis=0, out=b, mode="clip")
        np.einsum("kn,kn->k", a, b, out=values[s:e])
    return values


def _gathered(dy2, x2, rows, cols, values):
    """values[k] = dy2[:, rows[k]] . x2[:, cols[k]]: columns become contiguous rows first."""
    return _gathered_t(transpose_2d(dy2), transpose_2d(x2), rows, cols, values)


def _blocked(dyt, x_right, flat, indptr, values):
    """values = A.flat[flat] for a row-major support, A = dyt @ x_right by row blocks.

    ``dyt`` is dY2^T (a view is fine) and ``x_right`` is X2 (or (X2^T)^T).
    Only blocks of rows that hold support entries are computed, one BLAS
    product each, and each block is dropped after its entries are taken: the
    full A is never formed (peak memory one block of about ``_BLOCK_BYTES``).
    """
    out, fan_in = dyt.shape[0], x_right.shape[1]
    block = max(8, _BLOCK_BYTES // max(1, fan_in * dyt.itemsize))
    for r0 in range(0, out, block):
        r1 = min(out, r0 + block)
        s0, s1 = int(indptr[r0]), int(indptr[r1])
        if s0 == s1:
            continue
        a = dyt[r0:r1] @ x_right                             # (r1 - r0, fan_in)
        np.take(a.reshape(-1), flat[s0:s1] - r0 * fan_in, out=values[s0:s1])
    return values


def sampled_product(dy2: np.ndarray, x2: np.ndarray, rows, cols,
                    path: Optional[str] = None) -> np.ndarray:
    r"""Entries of :math:`A = dY_2^\top X_2` on a support, without forming A.

    For each support entry :math:`(r_k, c_k)`:

    .. math:: a_k = A_{r_k c_k} = \sum_n dY_{2,\,n r_k}\, X_{2,\,n c_k}

    Parameters
    ----------
    dy2 : ndarray (rows, out)
    x2 : ndarray (rows, fan_in), same dtype as ``dy2``
    rows, cols : 1-D integer arrays of equal length
        The support, e.g. ``np.nonzero(D)`` of a predicted backward mask;
        entries may repeat and need not be sorted (row-major order is fastest).
    path : {"dense", "sparse", "auto"} or None
        ``"sparse"`` gathers the two columns of every entry and takes their
        dot product (work proportional to the support); ``"dense"`` computes
        A by BLAS one block of rows at a time, only for blocks that hold
        support entries, and keeps those entries (the full A is never
        formed); ``"auto"`` compares the support fraction with
        :func:`sampled_crossover`; None uses the module default.

    Returns
    -------
    ndarray (len(rows),), dtype of the inputs
    """
    rows, cols, out, fan_in = _check_sampled(dy2, x2, rows, cols, "sampled_product")
    n, k = dy2.shape[0], rows.size
    values = np.empty(k, dtype=dy2.dtype)
    if k == 0:
        return values
    if _sampled_path(path, k, n, out, fan_in, dy2.dtype) == "sparse":
        return _gathered(dy2, x2, rows, cols, values)
    flat = rows * fan_in + cols
    order = np.argsort(flat, kind="stable")
    sorted_flat = flat[order]
    indptr = np.searchsorted(sorted_flat, np.arange(out + 1, dtype=np.intp) * fan_in)
    values[order] = _blocked(dy2.T, x2, sorted_flat, indptr, np.empty(k, dtype=dy2.dtype))
    return values


def sampled_product_csr(dy2: np.ndarray, x2: np.ndarray, support: Support,
                        path: Optional[str] = None, transposed: bool = False) -> np.ndarray:
    r"""Entries of :math:`A = dY_2^\top X_2` on a row-major :class:`Support`.

    The same two kernels as :func:`sampled_product` (and the same ``path``
    argument), for a support already in CSR order, as a masked layer keeps it.
    With ``transposed`` the operands are given as dY2^T (out, rows) and X2^T
    (fan_in, rows), the masked convolutions' layout; nothing is copied then.

    Returns
    -------
    ndarray (support.nnz,), dtype of the inputs, in the support's order
    """
    out, fan_in = support.shape
    where = "sampled_product_csr"
    check_matrix(dy2, "dy2", None, where=where)
    check_matrix(x2, "x2", None, dy2.dtype, where=where)
    if transposed:
        ok = dy2.shape[0] == out and x2.shape[0] == fan_in and dy2.shape[1] == x2.shape[1]
        n = dy2.shape[1]
    else:
        ok = dy2.shape[1] == out and x2.shape[1] == fan_in and dy2.shape[0] == x2.shape[0]
        n = dy2.shape[0]
    if not ok:
        raise ValueError(f"{where}: dy2 {dy2.shape} and x2 {x2.shape} do not fit a support of "
                         f"shape {support.shape} (transposed={transposed})")
    k = support.nnz
    values = np.empty(k, dtype=dy2.dtype)
    if k == 0:
        return values
    if _sampled_path(path, k, n, out, fan_in, dy2.dtype, transposed) == "sparse":
        if transposed:
            return _gathered_t(np.ascontiguousarray(dy2), np.ascontiguousarray(x2),
                               support.rows, support.cols, values)
        return _gathered(dy2, x2, support.rows, support.cols, values)
    if transposed:
        return _blocked(dy2, x2.T, support.flat, support.indptr, values)
    return _blocked(dy2.T, x2, support.flat, support.indptr, values)


def sampled_product_dense(dy2: np.ndarray, x2: np.ndarray, rows, cols,
                          path: Optional[str] = None) -> np.ndarray:
    r"""The sampled product as a dense (out, fan_in) array, zero off the support.

    .. math::
        \tilde A_{ij} = \begin{cases} (dY_2^\top X_2)_{ij} & (i, j) \in S \\
                                      0 & \text{otherwise} \end{cases}

    Parameters and path as in :func:`sampled_product`.

    Returns
    -------
    ndarray (out, fan_in), dtype of the inputs, C-contiguous
    """
    rows, cols, out, fan_in = _check_sampled(dy2, x2, rows, cols, "sampled_product_dense")
    result = np.zeros((out, fan_in), dtype=dy2.dtype)
    result[rows, cols] = sampled_product(dy2, x2, rows, cols, path=path)
    return result
