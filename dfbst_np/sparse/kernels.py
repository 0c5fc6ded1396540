r"""The weight products of a masked layer: dense, sparse, and the choice between them.

A masked layer (linear, or convolution on im2col columns) reduces to products
of 2-D matrices. With :math:`\hat W = W \odot M` of shape (out, fan_in),
:math:`X_2` of shape (rows, fan_in) and :math:`dY_2` of shape (rows, out):

.. math::
    Y_2 = X_2 \hat W^\top, \qquad
    dX_2 = dY_2 \hat W, \qquad
    A = dY_2^\top X_2 .

This module is the one place that computes them (SPEC section 2, "Execution"):

* :func:`prepare_weight` builds a :class:`MaskedWeight` once per forward from
  :math:`\hat W`; its :meth:`~MaskedWeight.forward` and
  :meth:`~MaskedWeight.backward_data` give :math:`Y_2` and :math:`dX_2`, on the
  dense path (NumPy/BLAS on :math:`\hat W`) or the sparse path (one
  ``scipy.sparse`` compressed matrix of :math:`\hat W`, built in the forward and
  reused by the backward-data product of the same step).
* :func:`sampled_product` gives :math:`A` only on a support (a sampled
  dense-dense product, SDDMM); :func:`sampled_product_dense` scatters it into a
  dense (out, fan_in) array.
* ``"auto"`` picks the faster path from the density and the product shape:
  :func:`crossover_density` / :func:`choose_path` for the weight products,
  :func:`sampled_crossover` for the sampled product. The constants in
  :data:`COSTS` were measured on the development machine by
  :func:`dfbst_np.sparse.crossover.measure_crossover`.
* The path is ``"dense"``, ``"sparse"`` or ``"auto"``: per call by argument,
  otherwise the module default (:func:`set_default_path`,
  :func:`get_default_path`, :func:`use_path`), which starts as ``"auto"``.

Both paths give the same numbers up to floating-point rounding (summation
order), keep the input dtype (float32 stays float32, float64 stays float64)
and return C-contiguous arrays. Inputs are checked, never cast or broadcast.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Dict, Iterator, Optional, Tuple

import numpy as np
import scipy.sparse as sp

__all__ = [
    "PATHS", "KernelCosts", "COSTS",
    "set_default_path", "get_default_path", "use_path",
    "crossover_density", "choose_path", "sampled_crossover",
    "MaskedWeight", "prepare_weight",
    "sampled_product", "sampled_product_dense",
]

#: The accepted values of every ``path`` argument.
PATHS = ("dense", "sparse", "auto")

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# Transposed copies are done in row blocks of about this many bytes: numpy's
# own transposed copy walks memory with a large stride and was 1.5-3x slower
# on this machine for the (rows, fan_in) shapes of im2col.
_TRANSPOSE_BLOCK_BYTES = 1 << 19
# Each gathered operand chunk of the sampled product stays about this size so
# that both chunks sit in L2; 4 MB chunks were 4x slower than 1 MB ones.
_SAMPLED_CHUNK_BYTES = 1 << 20
_SAMPLED_MIN_CHUNK = 64

_default_path = "auto"


# --------------------------------------------------------------------------
# path selection
# --------------------------------------------------------------------------

def _check_path(path, allow_none: bool = True) -> Optional[str]:
    if path is None and allow_none:
        return None
    if not isinstance(path, str) or path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}" + (" or None" if allow_none else "")
                         + f", got {path!r}")
    return path


def set_default_path(path: str) -> str:
    """Set the module-wide default path; return the previous one.

    Parameters
    ----------
    path : {"dense", "sparse", "auto"}
        Used by every product whose own ``path`` argument is None.

    Returns
    -------
    str
        The default before this call (so that callers can restore it).
    """
    global _default_path
    _check_path(path, allow_none=False)
    previous, _default_path = _default_path, path
    return previous


def get_default_path() -> str:
    """The module-wide default path: ``"dense"``, ``"sparse"`` or ``"auto"``."""
    return _default_path


@contextlib.contextmanager
def use_path(path: str) -> Iterator[str]:
    """Context manager: set the default path inside the block, restore it after.

    Examples
    --------
    >>> with use_path("dense"):
    ...     mw = prepare_weight(w_hat)      # doctest: +SKIP
    """
    previous = set_default_path(path)
    try:
        yield path
    finally:
        set_default_path(previous)


@dataclass(frozen=True)
class KernelCosts:
    r"""Costs of the kernels for one dtype, in nanoseconds (``call_us`` in microseconds).

    The model of one sparse step (build + forward + backward-data) is

    .. math::
        t = t_\mathrm{call} + c_\mathrm{build}\, \mathrm{numel}
            + c_\mathrm{nnz}\, \mathrm{nnz}
            + 2\, c_\mathrm{sparse}\, R\, \mathrm{nnz}
            + 2\, c_\mathrm{copy}\, R\, (\mathrm{out} + \mathrm{fan\_in}),

    and of one dense step :math:`2\, c_\mathrm{dense}\, R\, \mathrm{numel}`.

    Attributes
    ----------
    dense_ns : float
        :math:`c_\mathrm{dense}`: one multiply-add of a BLAS product (on all
        the cores BLAS uses).
    sparse_ns : float
        :math:`c_\mathrm{sparse}`: one multiply-add of scipy's compressed
        product (one core), per stored nonzero per row.
    copy_ns : float
        :math:`c_\mathrm{copy}`: one element of the transposed copies of
        operands and results that the sparse products need.
    build_ns : float
        :math:`c_\mathrm{build}`: scanning one entry of :math:`\hat W` to build
        the compressed matrix.
    build_nnz_ns : float
        :math:`c_\mathrm{nnz}`: storing one nonzero of it.
    call_us : float
        :math:`t_\mathrm{call}`: fixed Python/scipy overhead of one sparse step.
    sampled_ns : float
        One multiply-add of the sampled product, per support entry per row
        (its copies and call overhead use ``copy_ns`` and ``call_us``).
    """
    dense_ns: float
    sparse_ns: float
    copy_ns: float
    build_ns: float
    build_nnz_ns: float
    call_us: float
    sampled_ns: float


#: Measured kernel costs per dtype (see :mod:`dfbst_np.sparse.crossover` for
#: the command, the machine and the numbers). Replace an entry with the output
#: of ``measure_crossover()["costs"]`` to recalibrate on another machine.
COSTS: Dict[np.dtype, KernelCosts] = {
    np.dtype(np.float32): KernelCosts(dense_ns=0.0114, sparse_ns=0.083, copy_ns=0.57,
                                      build_ns=0.28, build_nnz_ns=10.1, call_us=44.0,
                                      sampled_ns=0.289),
    np.dtype(np.float64): KernelCosts(dense_ns=0.0236, sparse_ns=0.202, copy_ns=1.17,
                                      build_ns=0.22, build_nnz_ns=2.0, call_us=25.0,
                                      sampled_ns=0.321),
}


def _costs(dtype) -> KernelCosts:
    dtype = np.dtype(dtype)
    if dtype not in COSTS:
        raise ValueError(f"no kernel costs for dtype {dtype}; expected float32 or float64")
    return COSTS[dtype]


def crossover_density(n_rows: Optional[int], out: int, fan_in: int, dtype) -> float:
    r"""Density of :math:`\hat W` below which the sparse weight products are faster.

    One training step runs the forward and the backward-data product on the
    same :math:`\hat W` (out x fan_in, nnz nonzeros) and :math:`R` = ``n_rows``
    rows. With the costs :math:`c` of :data:`COSTS` (see :class:`KernelCosts`):

    .. math::
        t_\mathrm{dense} &= 2\, c_\mathrm{dense}\, R\, \mathrm{numel} \\
        t_\mathrm{sparse} &= t_\mathrm{call} + c_\mathrm{build}\, \mathrm{numel}
            + (c_\mathrm{nnz} + 2\, c_\mathrm{sparse} R)\, \mathrm{nnz}
            + 2\, c_\mathrm{copy}\, R\, (\mathrm{out} + \mathrm{fan\_in})

    (dense: two BLAS products; sparse: one build of the compressed matrix per
    step, two compressed products, the transposed copies of their operands and
    results, and a fixed overhead). Setting them equal with
    :math:`\mathrm{nnz} = d\, \mathrm{numel}`, :math:`\mathrm{numel} =
    \mathrm{out}\, \mathrm{fan\_in}`, gives

    .. math::
        d^* = \frac{2 R \left(c_\mathrm{dense}
                - c_\mathrm{copy} \left(\frac{1}{\mathrm{out}} + \frac{1}{\mathrm{fan\_in}}\right)\right)
                - c_\mathrm{build} - t_\mathrm{call} / \mathrm{numel}}
               {2 R\, c_\mathrm{sparse} + c_\mathrm{nnz}},

    clipped to [0, 1]; for many rows it tends to
    :math:`(c_\mathrm{dense} - c_\mathrm{copy}(1/\mathrm{out} + 1/\mathrm{fan\_in}))
    / c_\mathrm{sparse}`. Read it as: the asymptote
    :math:`c_\mathrm{dense}/c_\mathrm{sparse}` (about 10% here: BLAS on two
    cores does a multiply-add ~10 times faster than scipy's one-core loop),
    lowered for thin matrices, whose transposed copies cost as much as the
    products (a conv1 with out=20, fan_in=25 is never faster sparse), and for
    few rows, which do not amortise the per-step build.

    Parameters
    ----------
    n_rows : int or None
        Rows of :math:`X_2` (batch size, times output positions for a conv).
        None takes the limit of many rows.
    out, fan_in : int
        Shape of :math:`\hat W`.
    dtype : float32 or float64

    Returns
    -------
    float
        :math:`d^*` in [0, 1].
    """
    c = _costs(dtype)
    numel = int(out) * int(fan_in)
    if numel == 0 or n_rows == 0:
        return 0.0
    per_row = c.dense_ns - c.copy_ns * (1.0 / out + 1.0 / fan_in)
    if n_rows is None:
        d = per_row / c.sparse_ns
    else:
        d = ((2.0 * n_rows * per_row - c.build_ns - 1e3 * c.call_us / numel)
             / (2.0 * n_rows * c.sparse_ns + c.build_nnz_ns))
    return float(min(1.0, max(0.0, d)))


def choose_path(density: float, n_rows: Optional[int], out: int, fan_in: int, dtype) -> str:
    """The automatic choice for the weight products: ``"sparse"`` or ``"dense"``.

    Sparse when ``density < crossover_density(n_rows, out, fan_in, dtype)``,
    and always when ``density == 0`` (the products are then zeros, which the
    sparse path returns without any work).

    Parameters
    ----------
    density : float
        nnz(:math:`\\hat W`) / numel(:math:`\\hat W`).
    n_rows, out, fan_in, dtype
        As in :func:`crossover_density`.
    """
    if density == 0:
        return "sparse"
    return "sparse" if density < crossover_density(n_rows, out, fan_in, dtype) else "dense"


def sampled_crossover(n_rows: int, out: int, fan_in: int, dtype) -> float:
    r"""Support fraction below which the sampled product beats the full dense A.

    With :math:`k` support entries out of :math:`\mathrm{out}\,\mathrm{fan\_in}`,
    :math:`R` = ``n_rows``:

    .. math::
        t_\mathrm{dense} = c_\mathrm{dense}\, R\, \mathrm{out}\, \mathrm{fan\_in}, \qquad
        t_\mathrm{sampled} = c_\mathrm{sampled}\, R\, k
            + c_\mathrm{copy}\, R\, (\mathrm{out} + \mathrm{fan\_in}) + t_\mathrm{call},

    so, with :math:`s = k / (\mathrm{out}\,\mathrm{fan\_in})`,

    .. math::
        s^* = \frac{c_\mathrm{dense}}{c_\mathrm{sampled}}
            - \frac{c_\mathrm{copy}}{c_\mathrm{sampled}}
              \left(\frac{1}{\mathrm{out}} + \frac{1}{\mathrm{fan\_in}}\right)
            - \frac{t_\mathrm{call}}{c_\mathrm{sampled}\, R\, \mathrm{out}\, \mathrm{fan\_in}},

    clipped to [0, 1].
    """
    c = _costs(dtype)
    numel = int(out) * int(fan_in)
    if numel == 0 or n_rows == 0:
        return 0.0
    s = (c.dense_ns / c.sampled_ns - c.copy_ns / c.sampled_ns * (1.0 / out + 1.0 / fan_in)
         - 1e3 * c.call_us / (c.sampled_ns * n_rows * numel))
    return float(min(1.0, max(0.0, s)))


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def _transposed(a: np.ndarray) -> np.ndarray:
    """C-contiguous copy of ``a.T`` for a 2-D array, copied in row blocks."""
    r, c = a.shape
    block = _TRANSPOSE_BLOCK_BYTES // max(1, c * a.itemsize)
    block = max(16, 1 << max(0, block.bit_length() - 1))
    if r <= block:
        return np.ascontiguousarray(a.T)
    out = np.empty((c, r), dtype=a.dtype)
    for i in range(0, r, block):
        out[:, i:i + block] = a[i:i + block].T
    return out


def _check_matrix(a, name: str, cols: Optional[int], dtype=None, where: str = "") -> np.ndarray:
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


def _index_dtype(*sizes: int):
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


def _compress(w_hat: np.ndarray, nonzero: np.ndarray, nnz: int) -> sp.csc_array:
    """CSC of W_hat (the same arrays are the CSR of W_hat^T), int32 indices.

    Column-compressed is the faster layout for both products when fan_in >= out
    (nearly every layer here): the forward W_hat @ X2^T then streams the large
    operand X2^T once, and the backward-data W_hat^T @ dY2^T (a CSR product on
    the same arrays) writes each row of the large result dX2^T once. CSR of
    W_hat was up to 1.9x slower for VGG-like shapes on this machine.
    """
    out, fan_in = w_hat.shape
    idx = _index_dtype(w_hat.size, out, fan_in)
    flat = _flatnonzero(nonzero, nnz)
    indptr = np.searchsorted(flat, np.arange(out + 1, dtype=np.int64) * fan_in).astype(idx)
    data = np.ascontiguousarray(w_hat).reshape(-1)[flat]
    csr = sp.csr_array((data, (flat % fan_in).astype(idx), indptr), shape=(out, fan_in))
    # scipy's C conversion is cheaper than compressing the transposed mask directly.
    return csr.tocsc()


# --------------------------------------------------------------------------
# forward and backward-data products
# --------------------------------------------------------------------------

class MaskedWeight:
    r"""The masked weight :math:`\hat W = W \odot M` of one step, ready to multiply.

    Built once per forward by :func:`prepare_weight`; the same object serves
    the forward product and the backward-data product of that step, so the
    sparse structure is built at most once. The object holds a reference to
    ``w_hat`` (no copy) on the dense path and until an ``"auto"`` choice is
    made: do not modify ``w_hat`` in place before the backward-data product.

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
        Number of nonzero entries of :math:`\hat W`.
    density : float
        nnz / (out * fan_in); 0.0 for an empty matrix.
    """

    def __init__(self, w_hat: np.ndarray, path: Optional[str] = None,
                 n_rows: Optional[int] = None) -> None:
        _check_matrix(w_hat, "w_hat", None, where="prepare_weight")
        path = _check_path(path)
        self.requested = path if path is not None else _default_path
        self.shape: Tuple[int, int] = (int(w_hat.shape[0]), int(w_hat.shape[1]))
        self.dtype = w_hat.dtype
        self._nonzero = w_hat != 0    # NaN counts as nonzero, so it propagates on both paths
        self.nnz = int(np.count_nonzero(self._nonzero))
        self.density = self.nnz / w_hat.size if w_hat.size else 0.0
        self._w, self._csc, self._csr_t, self._path = w_hat, None, None, None
        if self.requested != "auto":
            self._resolve(self.requested)
        elif n_rows is not None:
            self._resolve(choose_path(self.density, n_rows, *self.shape, self.dtype))

    def _resolve(self, path: str) -> None:
        """Fix the path and build what it needs (the compressed matrix for sparse)."""
        self._path = path
        if path == "sparse":
            if self.nnz:
                self._csc = _compress(self._w, self._nonzero, self.nnz)
            self._w = None
        self._nonzero = None

    def _resolve_for(self, n_rows: Optional[int]) -> str:
        if self._path is None:
            self._resolve(choose_path(self.density, n_rows, *self.shape, self.dtype))
        return self._path

    @property
    def path(self) -> str:
        return self._resolve_for(None)

    def __repr__(self) -> str:
        path = self._path if self._path is not None else "auto (undecided)"
        return (f"MaskedWeight(shape={self.shape}, dtype={self.dtype}, path={path!r}, "
                f"nnz={self.nnz}, density={self.density:.4g})")

    def forward(self, x2: np.ndarray) -> np.ndarray:
        r"""Forward product, X2 (rows, fan_in) -> Y2 (rows, out).

        .. math:: Y_2 = X_2 \hat W^\top = (\hat W X_2^\top)^\top
        """
        out, fan_in = self.shape
        _check_matrix(x2, "x2", fan_in, self.dtype, where="MaskedWeight.forward")
        if self._resolve_for(x2.shape[0]) == "dense":
            return x2 @ self._w.T
        if self._csc is None or x2.shape[0] == 0:
            return np.zeros((x2.shape[0], out), dtype=self.dtype)
        # scipy multiplies a sparse matrix by a dense one whose rows are
        # contiguous, so the dense operand and the result travel transposed.
        return _transposed(self._csc @ _transposed(x2))

    def backward_data(self, dy2: np.ndarray) -> np.ndarray:
        r"""Backward-data product, dY2 (rows, out) -> dX2 (rows, fan_in).

        .. math:: dX_2 = dY_2 \hat W = (\hat W^\top dY_2^\top)^\top
        """
        out, fan_in = self.shape
        _check_matrix(dy2, "dy2", out, self.dtype, where="MaskedWeight.backward_data")
        if self._resolve_for(dy2.shape[0]) == "dense":
            return dy2 @ self._w
        if self._csc is None or dy2.shape[0] == 0:
            return np.zeros((dy2.shape[0], fan_in), dtype=self.dtype)
        if self._csr_t is None:
            # The CSC arrays of W_hat read as CSR are W_hat^T: no conversion.
            self._csr_t = self._csc.T
        return _transposed(self._csr_t @ _transposed(dy2))


def prepare_weight(w_hat: np.ndarray, path: Optional[str] = None,
                   n_rows: Optional[int] = None) -> MaskedWeight:
    r"""Build the :class:`MaskedWeight` of one step from :math:`\hat W = W \odot M`.

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

    Returns
    -------
    MaskedWeight
    """
    return MaskedWeight(w_hat, path=path, n_rows=n_rows)


# --------------------------------------------------------------------------
# sampled weight-gradient product (SDDMM)
# --------------------------------------------------------------------------

def _check_sampled(dy2, x2, rows, cols, where):
    _check_matrix(dy2, "dy2", None, where=where)
    _check_matrix(x2, "x2", None, dy2.dtype, where=where)
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


def _sampled_path(path, k, n, out, fan_in, dtype) -> str:
    path = _check_path(path)
    path = path if path is not None else _default_path
    if path != "auto":
        return path
    numel = out * fan_in
    frac = k / numel if numel else 0.0
    if frac == 0:
        return "sparse"
    return "sparse" if frac < sampled_crossover(n, out, fan_in, dtype) else "dense"


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
        ``"sparse"`` is the sampled product; ``"dense"`` forms A by BLAS and
        gathers; ``"auto"`` compares the support fraction with
        :func:`sampled_crossover`; None uses the module default.

    Returns
    -------
    ndarray (len(rows),), dtype of the inputs
    """
    rows, cols, out, fan_in = _check_sampled(dy2, x2, rows, cols, "sampled_product")
    n, k = dy2.shape[0], rows.size
    if _sampled_path(path, k, n, out, fan_in, dy2.dtype) == "dense":
        return np.ascontiguousarray((dy2.T @ x2)[rows, cols])
    values = np.empty(k, dtype=dy2.dtype)
    if k == 0:
        return values
    # Columns of dY2 and X2 become contiguous rows, so every gathered pair is
    # two contiguous vectors; chunks bound the gathered memory to ~2 MB.
    dyt, xt = _transposed(dy2), _transposed(x2)
    chunk = max(_SAMPLED_MIN_CHUNK, _SAMPLED_CHUNK_BYTES // max(1, n * dy2.itemsize))
    for s in range(0, k, chunk):
        e = min(k, s + chunk)
        np.einsum("kn,kn->k", dyt[rows[s:e]], xt[cols[s:e]], out=values[s:e])
    return values


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
