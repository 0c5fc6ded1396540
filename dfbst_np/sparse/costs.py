r"""The cost model behind the ``"auto"`` path: when are the sparse kernels faster?

A masked layer's products can run dense (BLAS on :math:`\hat W = W \odot M`)
or sparse (scipy's compressed kernels on the nonzeros of :math:`\hat W`;
the gathering sampled product on a support). Which is faster depends on the
density, the shape and the machine. This module predicts it from a few
per-element costs (:class:`KernelCosts`, one set per dtype in :data:`COSTS`):

* :func:`crossover_density` / :func:`choose_path`: the weight products
  (forward and backward-data) of one step;
* :func:`sampled_crossover`: the sampled weight-gradient product against the
  blocked dense one.

Which costs: on first use per dtype they are measured on the machine it
runs on (a few seconds) and cached in the user's cache folder, keyed by the
CPU model, the BLAS kernel and the NumPy version
(:mod:`dfbst_np.sparse.cost_cache`; :func:`model_info` says which were used).
``DFBST_NP_COST_MODEL=builtin`` takes :data:`BUILTIN` instead: the costs
fitted on the developers' machine by
:func:`dfbst_np.bench.crossover.measure_crossover` (the command, the machine
and the measured crossovers are in benchmarks/README.md, "Kernel crossovers:
measurement history"). The few factors fitted in whole training steps rather
than in isolated timings are module constants below, each with its reason.
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import astuple, dataclass, fields
from typing import Dict, Iterator, Mapping, Optional

import numpy as np

from ..runtime import blas_thread_count, threads_for
from . import cost_cache

__all__ = ["KernelCosts", "COSTS", "BUILTIN", "costs_for", "model_info", "in_use", "using",
           "to_array", "from_array", "crossover_density",
           "choose_path", "sampled_crossover", "dots_are_cheaper", "SPARSE_IN_STEP_T",
           "GIVEN_NNZ_NS", "SAMPLED_IN_STEP", "DOT_CALL_US", "DOT_NS"]


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
        BLAS thread; divided by the threads the product runs on
        (:func:`~dfbst_np.runtime.threads_for`).
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
        per row (its copies and call overhead: ``sampled_copy_ns``,
        ``sampled_call_us``).
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


#: Kernel costs per dtype fitted on the developers' machine (AMD EPYC, OpenBLAS
#: Haswell kernel; the command and the fit are in benchmarks/README.md): the
#: model of ``DFBST_NP_COST_MODEL=builtin``, and the fallback when a
#: measurement fails.
BUILTIN: Dict[np.dtype, KernelCosts] = {
    np.dtype(np.float32): KernelCosts(dense_ns=0.0172, sparse_ns=0.082, copy_ns=0.43,
                                      build_ns=0.18, build_nnz_ns=6.7, call_us=16.0,
                                      sampled_ns=0.243, mask_ns=0.136,
                                      sampled_copy_ns=0.40, sampled_call_us=1.0),
    np.dtype(np.float64): KernelCosts(dense_ns=0.0373, sparse_ns=0.185, copy_ns=0.94,
                                      build_ns=0.22, build_nnz_ns=2.2, call_us=12.0,
                                      sampled_ns=0.455, mask_ns=0.075,
                                      sampled_copy_ns=0.50, sampled_call_us=0.0),
}


#: Calibrated in training steps, where operands are no longer in cache (the
#: measurements behind each are in benchmarks/README.md, "Kernel crossovers"):
#:
#: the convolutions' compressed products (long rows, transposed layout) ran
#: this much slower in a step than in isolation, so their crossover is lower;
SPARSE_IN_STEP_T = 1.25
#: ns per stored nonzero to build the compressed matrix from a given larger
#: support (a subset and a gather: no scan of the mask, no branch per nonzero);
GIVEN_NNZ_NS = 2.5
#: the gathering sampled product (chunked einsum) ran this much slower in a step;
SAMPLED_IN_STEP = 1.2
#: one BLAS dot product per support entry (the long rows of a convolution):
#: fixed call cost in microseconds, and ns per multiply-add (float32, one thread).
DOT_CALL_US = 0.65
DOT_NS = 0.08


#: The costs in use per dtype, filled on first use (see the module docstring);
#: an entry set here (a recalibration, a test) is used as it is.
COSTS: Dict[np.dtype, KernelCosts] = {}
_SOURCE: Dict[np.dtype, str] = {}
_lock = threading.RLock()
_measuring = False


def _valid(c: KernelCosts) -> bool:
    values = [getattr(c, f) for f in KernelCosts.__dataclass_fields__]
    return (all(np.isfinite(v) and v >= 0 for v in values)
            and c.dense_ns > 0 and c.sparse_ns > 0 and c.sampled_ns > 0)


def _load(dtype: np.dtype) -> KernelCosts:
    """This machine's costs for ``dtype``: from the cache file, else measured and cached."""
    global _measuring
    if cost_cache.model_choice() == "builtin":
        _SOURCE[dtype] = "builtin (DFBST_NP_COST_MODEL=builtin; fitted on the developers' AMD EPYC)"
        return BUILTIN[dtype]
    key = cost_cache.machine_key()
    path = cost_cache.cache_path(key)
    cached = cost_cache.read(path, key, KernelCosts)
    if dtype in cached and _valid(cached[dtype]):
        _SOURCE[dtype] = f"measured on this machine, read from {path}"
        return cached[dtype]
    from ..bench.crossover import quick_costs     # the timing code, beside the bench
    _measuring = True                       # the kernels timed ask for costs: builtin meanwhile
    try:
        c = quick_costs(dtype)
    finally:
        _measuring = False
    if not _valid(c):
        _SOURCE[dtype] = f"builtin (the measurement on this machine gave unusable costs: {c})"
        return BUILTIN[dtype]
    cached = {dt: v for dt, v in cached.items() if _valid(v)}
    cached[dtype] = c
    written = cost_cache.write(path, key, cached)
    _SOURCE[dtype] = (f"measured on this machine now, written to {path}" if written else
                      f"measured on this machine now (not cached: {path.parent} is not writable)")
    return c


def costs_for(dtype) -> KernelCosts:
    """The costs in use for ``dtype`` (loaded or measured on first use); ValueError for
    dtypes other than float32 and float64."""
    dtype = np.dtype(dtype)
    if dtype not in BUILTIN:
        raise ValueError(f"no kernel costs for dtype {dtype}; expected float32 or float64")
    c = COSTS.get(dtype)
    if c is None:
        with _lock:
            if _measuring:
                return BUILTIN[dtype]
            c = COSTS.get(dtype)
            if c is None:
                c = COSTS[dtype] = _load(dtype)
    return c


def in_use() -> Dict[np.dtype, KernelCosts]:
    """The costs in use now, per dtype loaded so far in this process (a copy of :data:`COSTS`).

    A run records them in its checkpoint, so that resumed it chooses the same
    paths as it did: in float64 as in float32 a sparse and a dense product
    differ in their last bits, so another choice gives other numbers.
    """
    with _lock:
        return dict(COSTS)


@contextlib.contextmanager
def using(costs: Mapping[np.dtype, KernelCosts]) -> Iterator[None]:
    """Use ``costs`` (per dtype) for the ``with`` block; the costs in use before come back after.

    Dtypes not in ``costs`` keep their costs (loaded or measured on first use as usual).
    """
    costs = {np.dtype(dt): c for dt, c in costs.items()}
    for dt, c in costs.items():
        if dt not in BUILTIN or not isinstance(c, KernelCosts) or not _valid(c):
            raise ValueError(f"kernel costs for {dt} must be valid KernelCosts, got {c!r}")
    with _lock:
        saved = {dt: COSTS.get(dt) for dt in costs}
        COSTS.update(costs)
    try:
        yield
    finally:
        with _lock:
            for dt, c in saved.items():
                if c is None:
                    COSTS.pop(dt, None)
                else:
                    COSTS[dt] = c


def to_array(c: KernelCosts) -> np.ndarray:
    """The costs as a float64 vector, in :class:`KernelCosts`' field order (for a checkpoint)."""
    return np.array(astuple(c), dtype=np.float64)


def from_array(values: np.ndarray) -> KernelCosts:
    """The inverse of :func:`to_array`; ValueError for a vector of another length or unusable costs."""
    values = np.asarray(values)
    n = len(fields(KernelCosts))
    if values.shape != (n,) or values.dtype.kind != "f":
        raise ValueError(f"kernel costs must be {n} floats, got shape {values.shape} and dtype "
                         f"{values.dtype}")
    c = KernelCosts(*(float(v) for v in values))
    if not _valid(c):
        raise ValueError(f"kernel costs must be finite, non-negative and the product costs "
                         f"positive, got {c}")
    return c


def model_info(dtype=np.float32) -> Dict[str, str]:
    """Which cost model ``dtype`` uses and where it came from (loads it if needed):
    ``model`` (``DFBST_NP_COST_MODEL``), ``source``, and the machine key."""
    dtype = np.dtype(dtype)
    costs_for(dtype)
    source = _SOURCE.get(dtype, "set by the caller (COSTS)")
    return {"model": cost_cache.model_choice(), "source": source, **cost_cache.machine_key()}


def _dense_ns(c: KernelCosts, macs: Optional[float] = None) -> float:
    """One multiply-add of a dense product of ``macs`` multiply-adds, on the threads
    it will run on (:func:`dfbst_np.runtime.threads_for`)."""
    return c.dense_ns / (blas_thread_count() if macs is None else threads_for(macs))


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
    divided by the threads a product of R numel multiply-adds runs on
    (:func:`~dfbst_np.runtime.threads_for`: inside a step, the process's threads for a large one).

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
        :mod:`dfbst_np.nn.fast_im2col`): the sparse products need no transposed
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
    c = costs_for(dtype)
    numel = int(out) * int(fan_in)
    if numel == 0 or n_rows == 0:
        return 0.0
    copy_ns = 0.0 if transposed else c.copy_ns
    sparse_ns = c.sparse_ns * (SPARSE_IN_STEP_T if transposed else 1.0)
    per_row = (_dense_ns(c, None if n_rows is None else n_rows * numel)
               - copy_ns * (1.0 / out + 1.0 / fan_in))
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


def _einsum_entry_ns(c: KernelCosts, n_rows: int) -> float:
    return SAMPLED_IN_STEP * c.sampled_ns * n_rows


def _dot_entry_ns(n_rows: int) -> float:
    return 1e3 * DOT_CALL_US + DOT_NS * n_rows


def dots_are_cheaper(dtype, n_rows: int) -> bool:
    """Whether one BLAS dot per support entry beats the chunked einsum for rows of ``n_rows``."""
    return _dot_entry_ns(n_rows) < _einsum_entry_ns(costs_for(dtype), n_rows)


def sampled_crossover(n_rows: int, out: int, fan_in: int, dtype, transposed: bool = False) -> float:
    r"""Support fraction below which the gathering sampled product beats the blocked dense one.

    With :math:`k` support entries out of :math:`\mathrm{out}\,\mathrm{fan\_in}`,
    :math:`R` = ``n_rows``:

    .. math::
        t_\mathrm{dense} = c_\mathrm{dense}\, R\, \mathrm{out}\, \mathrm{fan\_in}, \qquad
        t_\mathrm{sampled} = e(R)\, k
            + c_\mathrm{copy}\, R\, (\mathrm{out} + \mathrm{fan\_in}) + t_\mathrm{call}

    where :math:`e(R)` is the cost of one entry with the cheaper gathering
    kernel: the chunked einsum, :math:`f\, c_\mathrm{sampled} R` (:math:`f` =
    :data:`SAMPLED_IN_STEP`: in a training step its operands are out of cache), or
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
    c = costs_for(dtype)
    numel = int(out) * int(fan_in)
    if numel == 0 or n_rows == 0:
        return 0.0
    copy_ns = 0.0 if transposed else c.sampled_copy_ns
    s = ((_dense_ns(c, n_rows * numel) * n_rows - copy_ns * n_rows * (1.0 / out + 1.0 / fan_in)
          - 1e3 * c.sampled_call_us / numel) / min(_einsum_entry_ns(c, n_rows), _dot_entry_ns(n_rows)))
    return float(min(1.0, max(0.0, s)))

