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
  :math:`\hat W` (or, without forming it, from W and the boolean mask M:
  :func:`prepare_masked`); its :meth:`~MaskedWeight.forward` and
  :meth:`~MaskedWeight.backward_data` give :math:`Y_2` and :math:`dX_2`, on the
  dense path (NumPy/BLAS on :math:`\hat W`) or the sparse path (the CSR arrays
  of :math:`\hat W` with int32 indices, built once in the forward and used by
  both products through scipy's compiled ``csr_matvecs``/``csc_matvecs``; the
  structure is reused as it is when the next step's mask is unchanged, as in
  evaluation).
* :func:`sampled_product` / :func:`sampled_product_csr` give :math:`A` only
  on a support (a sampled dense-dense product, SDDMM) without ever forming the
  full (out, fan_in) matrix; :func:`sampled_product_dense` scatters it into a
  dense array.
* ``"auto"`` picks the faster path from the density and the product shape:
  :func:`crossover_density` / :func:`choose_path` for the weight products,
  :func:`sampled_crossover` for the sampled product. The constants in
  :data:`COSTS` were measured on the development machine by
  :func:`dfbst_np.sparse.crossover.measure_crossover` (the numbers, the
  command and the measured crossovers are in that module's docstring).
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

from ..runtime import blas_thread_count

try:    # scipy's compiled kernels behind csr_array @ dense, without the object overhead
    from scipy.sparse import _sparsetools
    _csr_matvecs, _csc_matvecs = _sparsetools.csr_matvecs, _sparsetools.csc_matvecs
except (ImportError, AttributeError):  # pragma: no cover - a scipy without them
    _csr_matvecs = _csc_matvecs = None

__all__ = [
    "PATHS", "KernelCosts", "COSTS",
    "set_default_path", "get_default_path", "use_path", "blas_threads",
    "crossover_density", "choose_path", "sampled_crossover",
    "MaskedWeight", "prepare_weight", "prepare_masked",
    "sampled_product", "sampled_product_csr", "sampled_product_dense",
    "support_structure", "weight_gradient", "weight_gradient_t", "dense_backward_data",
    "dense_forward_t", "dense_backward_data_t",
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
_SAMPLED_MIN_CHUNK = 8
# The blocked dense kernel of the sampled product computes A in row blocks of
# about this many bytes. OpenBLAS loses speed on short blocks: for LeNet-300-100's
# fc1 (300 x 784, support 15 %, float32, one thread) at batch 256 blocks of
# 83 rows (256 KB) took 1.22 ms, 167 rows (512 KB) 1.08 ms, 208 rows (640 KB)
# 1.01 ms, and the whole A at once 0.98 ms (0.31 / 0.29 / 0.28 / 0.26 ms at batch 64).
_SAMPLED_BLOCK_BYTES = 640 << 10

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


def blas_threads() -> int:
    """Threads the BLAS uses now (:func:`dfbst_np.runtime.blas_thread_count`)."""
    return blas_thread_count()


@dataclass(frozen=True)
class KernelCosts:
    r"""Costs of the kernels for one dtype, in nanoseconds (``call_us`` in microseconds).

    The model of one sparse step of a layer (build, then ``p`` products: the
    forward, and the backward-data one unless the layer's input needs no
    gradient) is

    .. math::
        t_\mathrm{sparse} = t_\mathrm{call} + c_\mathrm{build}\, \mathrm{numel}
            + c_\mathrm{nnz}\, \mathrm{nnz}
            + p\, \big(c_\mathrm{sparse}\, R\, \mathrm{nnz}
            + c_\mathrm{copy}\, R\, (\mathrm{out} + \mathrm{fan\_in})\big),

    and of one dense step :math:`c_\mathrm{mask}\, \mathrm{numel} + p\,
    c_\mathrm{dense}\, R\, \mathrm{numel}` (forming :math:`\hat W = W \odot M`,
    then BLAS).

    Attributes
    ----------
    dense_ns : float
        :math:`c_\mathrm{dense}`: one multiply-add of a BLAS product with one
        BLAS thread; divided by :func:`blas_threads` when more are used.
    sparse_ns : float
        :math:`c_\mathrm{sparse}`: one multiply-add of scipy's compressed
        product (one core), per stored nonzero per row.
    copy_ns : float
        :math:`c_\mathrm{copy}`: one element of the transposed copies of
        operands and results that the sparse products need.
    build_ns : float
        :math:`c_\mathrm{build}`: scanning one entry of the mask to build the
        compressed matrix.
    build_nnz_ns : float
        :math:`c_\mathrm{nnz}`: storing one nonzero of it.
    call_us : float
        :math:`t_\mathrm{call}`: fixed Python/scipy overhead of one sparse step.
    sampled_ns : float
        One multiply-add of the gathering sampled product, per support entry
        per row (its copies and call overhead use ``copy_ns`` and ``call_us``).
    mask_ns : float
        :math:`c_\mathrm{mask}`: one entry of :math:`W \odot M` on the dense path.
    sampled_copy_ns, sampled_call_us : float
        The gathering sampled product's transposed copies of its operands (per
        element) and fixed overhead.
    """
    dense_ns: float
    sparse_ns: float
    copy_ns: float
    build_ns: float
    build_nnz_ns: float
    call_us: float
    sampled_ns: float
    mask_ns: float = 0.15
    sampled_copy_ns: float = 0.5
    sampled_call_us: float = 20.0


#: Measured kernel costs per dtype (see :mod:`dfbst_np.sparse.crossover` for
#: the command, the machine and the numbers). Replace an entry with the output
#: of ``measure_crossover()["costs"]`` to recalibrate on another machine.
COSTS: Dict[np.dtype, KernelCosts] = {
    np.dtype(np.float32): KernelCosts(dense_ns=0.0172, sparse_ns=0.082, copy_ns=0.43,
                                      build_ns=0.18, build_nnz_ns=6.7, call_us=16.0,
                                      sampled_ns=0.243, mask_ns=0.136,
                                      sampled_copy_ns=0.40, sampled_call_us=1.0),
    np.dtype(np.float64): KernelCosts(dense_ns=0.0373, sparse_ns=0.185, copy_ns=0.94,
                                      build_ns=0.22, build_nnz_ns=2.2, call_us=12.0,
                                      sampled_ns=0.455, mask_ns=0.075,
                                      sampled_copy_ns=0.50, sampled_call_us=0.0),
}


def _costs(dtype) -> KernelCosts:
    dtype = np.dtype(dtype)
    if dtype not in COSTS:
        raise ValueError(f"no kernel costs for dtype {dtype}; expected float32 or float64")
    return COSTS[dtype]


def _dense_ns(c: KernelCosts) -> float:
    return c.dense_ns / blas_threads()


#: In a training step, the compressed products of the convolutions (long rows,
#: the transposed layout) ran 1.25x slower than in the isolated timings the
#: constants come from (LeNet-5, batch 256: forward 16.0 ms sparse against
#: 12.8 ms dense at 20 % density, 8.0 against 12.6 ms at 10 %, where the model
#: expected equal and half); their crossover is taken that much lower.
SPARSE_IN_STEP_T = 1.25


#: ns per stored nonzero to build the compressed matrix from a given larger
#: support (``Support.subset`` and the gather of W): no scan of the mask, and
#: no branching loop per nonzero. Measured on LeNet-300-100's fc1 at 5-10 %
#: density (float32, this machine): 2.4-2.6 ns.
GIVEN_NNZ_NS = 2.5


def crossover_density(n_rows: Optional[int], out: int, fan_in: int, dtype,
                      products: int = 2, transposed: bool = False,
                      structure_given: bool = False) -> float:
    r"""Density of :math:`\hat W` below which the sparse weight products are faster.

    One training step runs ``products`` products on the same :math:`\hat W`
    (out x fan_in, nnz nonzeros) with :math:`R` = ``n_rows`` rows: the forward,
    and the backward-data product unless the layer's input needs no gradient
    (``products=1``, the first layer of a network). With the costs :math:`c`
    of :data:`COSTS` (see :class:`KernelCosts`) and :math:`p` = ``products``:

    .. math::
        t_\mathrm{dense} &= c_\mathrm{mask}\, \mathrm{numel}
            + p\, c_\mathrm{dense}\, R\, \mathrm{numel} \\
        t_\mathrm{sparse} &= t_\mathrm{call} + c_\mathrm{build}\, \mathrm{numel}
            + (c_\mathrm{nnz} + p\, c_\mathrm{sparse} R)\, \mathrm{nnz}
            + p\, c_\mathrm{copy}\, R\, (\mathrm{out} + \mathrm{fan\_in})

    Setting them equal with :math:`\mathrm{nnz} = d\, \mathrm{numel}`,
    :math:`\mathrm{numel} = \mathrm{out}\, \mathrm{fan\_in}`, gives

    .. math::
        d^* = \frac{p R \left(c_\mathrm{dense}
                - c_\mathrm{copy} \left(\frac{1}{\mathrm{out}} + \frac{1}{\mathrm{fan\_in}}\right)\right)
                + c_\mathrm{mask} - c_\mathrm{build} - t_\mathrm{call} / \mathrm{numel}}
               {p R\, c_\mathrm{sparse} + c_\mathrm{nnz}},

    clipped to [0, 1]; for many rows it tends to
    :math:`(c_\mathrm{dense} - c_\mathrm{copy}(1/\mathrm{out} + 1/\mathrm{fan\_in}))
    / c_\mathrm{sparse}`. Read it as: the asymptote
    :math:`c_\mathrm{dense}/c_\mathrm{sparse}` (about 10% here: BLAS does a
    multiply-add ~10 times faster than scipy's compressed loop), lowered for
    thin matrices, whose transposed copies cost as much as the products (a
    conv1 with out=20, fan_in=25 is never faster sparse), and for few rows,
    which do not amortise the per-step build. :math:`c_\mathrm{dense}` is
    divided by the BLAS thread count (:func:`blas_threads`).

    Parameters
    ----------
    n_rows : int or None
        Rows of :math:`X_2` (batch size, times output positions for a conv).
        None takes the limit of many rows.
    out, fan_in : int
        Shape of :math:`\hat W`.
    dtype : float32 or float64
    products : 1 or 2
        Products per step on this weight.
    transposed : bool
        The operands come as X2^T and dY2^T (the masked convolutions' layout,
        :mod:`dfbst_np.sparse.conv`): the sparse products need no transposed
        copies, :math:`c_\mathrm{copy} = 0`, and :math:`c_\mathrm{sparse}` is
        multiplied by :data:`SPARSE_IN_STEP_T` (measured in training steps).
    structure_given : bool
        The sparse structure comes from a larger support the caller has (a
        predicted layer's S): :math:`c_\mathrm{build} = 0` and
        :math:`c_\mathrm{nnz}` = :data:`GIVEN_NNZ_NS`.

    Returns
    -------
    float
        :math:`d^*` in [0, 1].
    """
    c = _costs(dtype)
    numel = int(out) * int(fan_in)
    if numel == 0 or n_rows == 0:
        return 0.0
    copy_ns = 0.0 if transposed else c.copy_ns
    sparse_ns = c.sparse_ns * (SPARSE_IN_STEP_T if transposed else 1.0)
    per_row = _dense_ns(c) - copy_ns * (1.0 / out + 1.0 / fan_in)
    if n_rows is None:
        d = per_row / sparse_ns
    else:
        p = float(products)
        build_ns, nnz_ns = (0.0, GIVEN_NNZ_NS) if structure_given else (c.build_ns, c.build_nnz_ns)
        d = ((p * n_rows * per_row + c.mask_ns - build_ns - 1e3 * c.call_us / numel)
             / (p * n_rows * sparse_ns + nnz_ns))
    return float(min(1.0, max(0.0, d)))


def choose_path(density: float, n_rows: Optional[int], out: int, fan_in: int, dtype,
                products: int = 2, transposed: bool = False, structure_given: bool = False) -> str:
    """The automatic choice for the weight products: ``"sparse"`` or ``"dense"``.

    Sparse when ``density < crossover_density(n_rows, out, fan_in, dtype, products)``,
    and always when ``density == 0`` (the products are then zeros, which the
    sparse path returns without any work).

    Parameters
    ----------
    density : float
        nnz(:math:`\\hat W`) / numel(:math:`\\hat W`).
    n_rows, out, fan_in, dtype, products, transposed, structure_given
        As in :func:`crossover_density`.
    """
    if density == 0:
        return "sparse"
    d = crossover_density(n_rows, out, fan_in, dtype, products, transposed, structure_given)
    return "sparse" if density < d else "dense"


#: The gathering kernel in a training step runs slower than in the isolated
#: timing its constants come from (its operands and the gathered rows are no
#: longer in cache): ~1.5x for the fancy-indexing kernel (LeNet-5's fc3 and
#: conv2); 1.2 for the ``take`` kernel puts the crossover where the bench
#: found it on LeNet-300-100's fc1 (support 5.2 %: gathering as fast at batch
#: 64 and 17 % faster at batch 256; support 10.4 %: blocked BLAS 30 % faster).
SAMPLED_IN_STEP = 1.2
#: Per-entry BLAS dot products (for long rows: convolutions' N*OH*OW positions):
#: a fixed Python/NumPy call cost per entry and a cost per multiply-add (float32,
#: one thread, this machine; float64 costs about the same per call).
DOT_CALL_US = 0.65
DOT_NS = 0.08


def _gathered_entry_ns(c: KernelCosts, n_rows: int) -> float:
    """ns per support entry of the cheaper gathering kernel (chunked einsum or BLAS dots)."""
    return min(SAMPLED_IN_STEP * c.sampled_ns * n_rows, 1e3 * DOT_CALL_US + DOT_NS * n_rows)


def sampled_crossover(n_rows: int, out: int, fan_in: int, dtype, transposed: bool = False) -> float:
    r"""Support fraction below which the gathering sampled product beats the blocked dense one.

    With :math:`k` support entries out of :math:`\mathrm{out}\,\mathrm{fan\_in}`,
    :math:`R` = ``n_rows``:

    .. math::
        t_\mathrm{dense} = c_\mathrm{dense}\, R\, \mathrm{out}\, \mathrm{fan\_in}, \qquad
        t_\mathrm{sampled} = e(R)\, k
            + c_\mathrm{copy}\, R\, (\mathrm{out} + \mathrm{fan\_in}) + t_\mathrm{call}

    where :math:`e(R)` is the cost of one entry with the cheaper gathering
    kernel: the chunked einsum, :math:`1.5\, c_\mathrm{sampled} R` (1.5: in a
    training step its operands are out of cache, :data:`SAMPLED_IN_STEP`), or
    one BLAS dot product per entry, :math:`t_\mathrm{dot} + c_\mathrm{dot} R`
    (:data:`DOT_CALL_US`, :data:`DOT_NS`; cheaper for the long rows of a
    convolution); :math:`c_\mathrm{copy}`, :math:`t_\mathrm{call}`: the sampled
    product's own, ``sampled_copy_ns`` and ``sampled_call_us`` (no copies for
    ``transposed`` operands, the convolutions' layout). So, with
    :math:`s = k / (\mathrm{out}\,\mathrm{fan\_in})`,

    .. math::
        s^* = \frac{c_\mathrm{dense} R
            - c_\mathrm{copy} R \left(\frac{1}{\mathrm{out}} + \frac{1}{\mathrm{fan\_in}}\right)
            - t_\mathrm{call} / (\mathrm{out}\,\mathrm{fan\_in})}{e(R)},

    clipped to [0, 1]. (The einsum copies two rows of N numbers per support
    entry: ~25 ns per entry at N = 64, against ~0.5 ns for a whole entry of A
    from BLAS, so :math:`s^*` is a few percent.)
    """
    c = _costs(dtype)
    numel = int(out) * int(fan_in)
    if numel == 0 or n_rows == 0:
        return 0.0
    copy_ns = 0.0 if transposed else c.sampled_copy_ns
    s = ((_dense_ns(c) * n_rows - copy_ns * n_rows * (1.0 / out + 1.0 / fan_in)
          - 1e3 * c.sampled_call_us / numel) / _gathered_entry_ns(c, n_rows))
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
    idx = _index_dtype(pattern.size, out, fan_in)
    flat = _flatnonzero(pattern, nnz)
    indptr = np.searchsorted(flat, np.arange(out + 1, dtype=np.intp) * fan_in).astype(idx, copy=False)
    return Support((int(out), int(fan_in)), flat, indptr)


# --------------------------------------------------------------------------
# forward and backward-data products
# --------------------------------------------------------------------------

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
            _check_matrix(w_hat, "w_hat", None, where="prepare_weight")
            weight, pattern = w_hat, w_hat != 0   # NaN counts as nonzero: it propagates on both paths
            nnz = None
        else:
            _check_matrix(weight, "weight", None, where="prepare_masked")
            if not (isinstance(pattern, np.ndarray) and pattern.dtype == bool
                    and pattern.shape == weight.shape):
                raise TypeError(f"prepare_masked: pattern must be a bool array of shape "
                                f"{weight.shape}, got {getattr(pattern, 'dtype', type(pattern))}")
        path = _check_path(path)
        self.requested = path if path is not None else _default_path
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
        _check_matrix(x2, "x2", fan_in, self.dtype, where="MaskedWeight.forward")
        if self._resolve_for(x2.shape[0]) == "dense":
            return x2 @ self._hat.T
        if self._csr is None or x2.shape[0] == 0:
            return np.zeros((x2.shape[0], out), dtype=self.dtype)
        # scipy multiplies by a dense matrix whose rows are contiguous, so the
        # dense operand and the result travel transposed.
        return _transposed(self._spmm(False, _transposed(x2)))

    def backward_data(self, dy2: np.ndarray) -> np.ndarray:
        r"""Backward-data product, dY2 (rows, out) -> dX2 (rows, fan_in).

        .. math:: dX_2 = dY_2 \hat W = (\hat W^\top dY_2^\top)^\top
        """
        out, fan_in = self.shape
        _check_matrix(dy2, "dy2", out, self.dtype, where="MaskedWeight.backward_data")
        if self._resolve_for(dy2.shape[0]) == "dense":
            return dy2 @ self._hat
        if self._csr is None or dy2.shape[0] == 0:
            return np.zeros((dy2.shape[0], fan_in), dtype=self.dtype)
        return _transposed(self._spmm(True, _transposed(dy2)))

    def forward_t(self, x2t: np.ndarray) -> np.ndarray:
        r"""Forward product in the transposed layout, X2^T (fan_in, rows) -> Y2^T (out, rows).

        .. math:: Y_2^\top = \hat W X_2^\top
        """
        out, fan_in = self.shape
        _check_matrix(x2t, "x2t", None, self.dtype, where="MaskedWeight.forward_t")
        if x2t.shape[0] != fan_in:
            raise ValueError(f"MaskedWeight.forward_t: x2t must have {fan_in} rows, got {x2t.shape}")
        if self._resolve_for(x2t.shape[1]) == "dense":
            return self._hat @ x2t
        if self._csr is None or x2t.shape[1] == 0:
            return np.zeros((out, x2t.shape[1]), dtype=self.dtype)
        return self._spmm(False, np.ascontiguousarray(x2t))

    def backward_data_t(self, dy2t: np.ndarray) -> np.ndarray:
        r"""Backward-data product in the transposed layout, dY2^T (out, rows) -> dX2^T (fan_in, rows).

        .. math:: dX_2^\top = \hat W^\top dY_2^\top
        """
        out, fan_in = self.shape
        _check_matrix(dy2t, "dy2t", None, self.dtype, where="MaskedWeight.backward_data_t")
        if dy2t.shape[0] != out:
            raise ValueError(f"MaskedWeight.backward_data_t: dy2t must have {out} rows, got {dy2t.shape}")
        if self._resolve_for(dy2t.shape[1]) == "dense":
            return self._hat.T @ dy2t
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
# dense products (one place, so that they can be timed and chosen)
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
    return dy2.T @ x2


def weight_gradient_t(dy2t: np.ndarray, x2t: np.ndarray) -> np.ndarray:
    r""":math:`A = dY_2^\top (X_2^\top)^\top` from the transposed layout, (out, fan_in), by BLAS."""
    return dy2t @ x2t.T


def dense_backward_data(dy2: np.ndarray, w2: np.ndarray) -> np.ndarray:
    r""":math:`dX_2 = dY_2 W_2` for an unmasked weight, by BLAS."""
    return dy2 @ w2


def dense_forward_t(w2: np.ndarray, x2t: np.ndarray) -> np.ndarray:
    r""":math:`Y_2^\top = W_2 X_2^\top` for an unmasked weight (transposed layout), by BLAS."""
    return w2 @ x2t


def dense_backward_data_t(w2: np.ndarray, dy2t: np.ndarray) -> np.ndarray:
    r""":math:`dX_2^\top = W_2^\top dY_2^\top` for an unmasked weight (transposed layout), by BLAS."""
    return w2.T @ dy2t


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


def _sampled_path(path, k, n, out, fan_in, dtype, transposed: bool = False) -> str:
    path = _check_path(path)
    path = path if path is not None else _default_path
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
    c = _costs(dyt.dtype)
    if 1e3 * DOT_CALL_US + DOT_NS * n < SAMPLED_IN_STEP * c.sampled_ns * n:
        for e, (r, col) in enumerate(zip(rows.tolist(), cols.tolist())):
            values[e] = np.dot(dyt[r], xt[col])
        return values
    chunk = min(k, max(_SAMPLED_MIN_CHUNK, _SAMPLED_CHUNK_BYTES // max(1, n * dyt.itemsize)))
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
    return _gathered_t(_transposed(dy2), _transposed(x2), rows, cols, values)


def _blocked(dyt, x_right, flat, indptr, values):
    """values = A.flat[flat] for a row-major support, A = dyt @ x_right by row blocks.

    ``dyt`` is dY2^T (a view is fine) and ``x_right`` is X2 (or (X2^T)^T).
    Only blocks of rows that hold support entries are computed, one BLAS
    product each, and each block is dropped after its entries are taken: the
    full A is never formed (peak memory one block of ~256 KB).
    """
    out, fan_in = dyt.shape[0], x_right.shape[1]
    block = max(8, _SAMPLED_BLOCK_BYTES // max(1, fan_in * dyt.itemsize))
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
    _check_matrix(dy2, "dy2", None, where=where)
    _check_matrix(x2, "x2", None, dy2.dtype, where=where)
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
