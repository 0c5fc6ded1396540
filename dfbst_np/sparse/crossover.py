r"""Measure where the sparse kernels beat the dense ones on this machine: the calibration tool.

:func:`measure_crossover` times whole steps (prepare + forward +
backward-data of :mod:`dfbst_np.sparse.products`) on both paths for the
weight shapes of the reference models over a grid of densities, and the
sampled product (:mod:`dfbst_np.sparse.sampled`) against the blocked dense
one. It fits the constants of the cost model of
:class:`~dfbst_np.sparse.costs.KernelCosts` to those timings (non-negative
least squares on relative error) and reports, per layer, the crossover
density that the fitted model predicts beside the one read off the timings.

To recalibrate on another machine (about 20-40 s on two cores; keep the
machine otherwise idle, since BLAS suffers most when another process holds a
core)::

    OPENBLAS_NUM_THREADS=1 python -c "from dfbst_np.sparse.crossover import measure_crossover; measure_crossover()"

and put the returned ``costs`` into :data:`dfbst_np.sparse.costs.COSTS`.
``dense`` is fitted per BLAS thread. The convolutions are timed in their
transposed layout (:mod:`dfbst_np.nn.fast_im2col`), which needs no copies; the
sampled product's constants come from the linear layers (the convolutions'
long rows use one BLAS dot per entry, :data:`~dfbst_np.sparse.costs.DOT_CALL_US`
and :data:`~dfbst_np.sparse.costs.DOT_NS`). A measured crossover of 0.000
means the sparse step was slower at every density tried with nonzeros.

The runs behind the current constants, and how the factors fitted in whole
training steps were found, are in benchmarks/README.md ("Kernel crossovers:
measurement history").
"""
from __future__ import annotations

import time
from typing import Dict, List, Sequence, Tuple

import numpy as np
from scipy.optimize import nnls

from ..runtime import blas_thread_count
from . import costs as cost_model
from .costs import KernelCosts
from .products import prepare_masked
from .sampled import sampled_product_csr
from .support import support_structure

#: (name, rows, out, fan_in): weight products of the reference models, batch 64.
DEFAULT_LAYERS: Tuple[Tuple[str, int, int, int], ...] = (
    ("lenet300 fc1", 64, 300, 784),
    ("lenet300 fc2", 64, 100, 300),
    ("lenet5 conv1", 64 * 24 * 24, 20, 25),
    ("lenet5 conv2", 64 * 8 * 8, 50, 500),
    ("lenet5 fc3", 64, 500, 800),
    ("vgg16 block5 conv", 64 * 2 * 2, 512, 4608),
    ("vgg16 classifier", 64, 512, 512),
)

#: Densities of W_hat timed per layer (until sparse is clearly slower).
DENSITY_GRID = (0.001, 0.002, 0.004, 0.008, 0.016, 0.024, 0.032, 0.048, 0.064,
                0.08, 0.1, 0.13, 0.16, 0.2, 0.3, 0.5)

#: Support fractions timed for the sampled product.
SUPPORT_GRID = (0.005, 0.01, 0.02, 0.04, 0.08, 0.2)


def _best(fn, repeat: int) -> float:
    """Fastest of ``repeat`` runs in seconds: the run least disturbed by other load."""
    fn()  # warm caches and the allocator
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _masked(rng, out, fan_in, density, dtype):
    """A weight W and a bool mask M keeping about ``density`` of it."""
    w = rng.standard_normal((out, fan_in)).astype(dtype)
    return w, rng.random((out, fan_in)) < density


def _step(w, m, x, dy, path, products=2, transposed=False):
    if transposed:      # x is X2^T (fan_in, rows), dy is dY2^T (out, rows)
        mw = prepare_masked(w, m, path=path, n_rows=x.shape[1], products=products, transposed=True)
        mw.forward_t(x)
        if products > 1:
            mw.backward_data_t(dy)
        return
    mw = prepare_masked(w, m, path=path, n_rows=x.shape[0], products=products)
    mw.forward(x)
    if products > 1:
        mw.backward_data(dy)


def _relative_nnls(features: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Non-negative coefficients c minimising sum(((features @ c) / times - 1)^2)."""
    coef, _ = nnls(features / times[:, None], np.ones_like(times))
    return coef


def time_layer(rows: int, out: int, fan_in: int, dtype, repeat: int = 5, seed: int = 0,
               grid: Sequence[float] = DENSITY_GRID, min_points: int = 4,
               products: int = 2, transposed: bool = False) -> Dict:
    """Time one dense step and sparse steps over ``grid`` for one weight shape.

    A step is what a training step runs on one layer's masked weight: the
    preparation from W and M (forming W * M on the dense path, building the
    CSR arrays on the sparse one), the forward product and, with
    ``products=2``, the backward-data product (``transposed``: in the
    convolutions' layout, X2^T and dY2^T). Dense is re-timed beside every
    sparse timing and the fastest dense time is the baseline (BLAS is hurt
    most by other load, which would flatter the sparse path). The grid stops
    once sparse has been slower at two densities in a row and ``min_points``
    densities with nonzeros are timed.

    Returns
    -------
    dict
        ``dense``: seconds; ``sparse``: list of (density, nnz, seconds);
        ``products``.
    """
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    x = rng.standard_normal((fan_in, rows) if transposed else (rows, fan_in)).astype(dtype)
    dy = rng.standard_normal((out, rows) if transposed else (rows, out)).astype(dtype)
    t_dense, sparse = np.inf, []
    for d in grid:
        w, m = _masked(rng, out, fan_in, d, dtype)
        t_dense = min(t_dense, _best(lambda: _step(w, m, x, dy, "dense", products, transposed), repeat))
        sparse.append((d, int(np.count_nonzero(m)),
                       _best(lambda: _step(w, m, x, dy, "sparse", products, transposed), repeat)))
        timed = sum(1 for _, nnz, _ in sparse if nnz)
        if timed >= min_points and min(t for _, _, t in sparse[-2:]) >= t_dense:
            break
    return {"dense": t_dense, "sparse": sparse, "products": products, "transposed": transposed}


def crossing(timing: Dict) -> float:
    """Density where the timed sparse step becomes slower than the dense one.

    Log-linear interpolation between the last faster and the first slower
    density; 0.0 when no density with nonzeros was faster, the last density
    timed when all were faster.
    """
    points = [(d, t / timing["dense"]) for d, nnz, t in timing["sparse"] if nnz]
    result = 0.0
    for i, (d1, r1) in enumerate(points):
        if r1 < 1.0:
            result = d1
            continue
        if i and points[i - 1][1] < 1.0:
            (d0, r0) = points[i - 1]
            f = np.log(r0) / (np.log(r0) - np.log(r1))
            result = float(np.exp(np.log(d0) + f * (np.log(d1) - np.log(d0))))
        break
    return result


def fit_costs(layers: Sequence[Tuple[str, int, int, int]], timings: Sequence[Dict],
              sampled: Sequence[Tuple[int, int, int, int, float]], threads: int = 1) -> KernelCosts:
    """Fit :class:`KernelCosts` to step timings and sampled-product timings.

    Parameters
    ----------
    layers : (name, rows, out, fan_in) per timing
    timings : output of :func:`time_layer` per layer
    sampled : (rows, out, fan_in, support size, seconds[, transposed]) per measurement
    threads : BLAS threads during the timings; ``dense_ns`` is stored per
        thread (multiplied by it), as :data:`~dfbst_np.sparse.costs.COSTS` wants.
    """
    dfeats, dtimes, feats, times = [], [], [], []
    for (_, rows, out, fan_in), timing in zip(layers, timings):
        numel, p = out * fan_in, timing.get("products", 2)
        dfeats.append([numel, p * rows * numel])
        dtimes.append(timing["dense"] * 1e9)
        for _, nnz, t in timing["sparse"]:
            if nnz:   # nnz == 0 returns zeros without the products
                copies = 0 if timing.get("transposed") else p * rows * (out + fan_in)
                feats.append([1e3, numel, nnz, p * rows * nnz, copies])
                times.append(t * 1e9)
    mask_ns, dense_ns = _relative_nnls(np.array(dfeats, float), np.array(dtimes))
    call_us, build_ns, build_nnz_ns, sparse_ns, copy_ns = _relative_nnls(
        np.array(feats, float), np.array(times))
    # sampled: its own copies and call overhead, and the rest per multiply-add;
    # fitted on the row-layout (linear) products only: the convolutions' long
    # rows run one BLAS dot per entry instead (costs.DOT_CALL_US, DOT_NS)
    einsum = [m for m in sampled if not (len(m) > 5 and m[5])]
    sfeats = np.array([[m[0] * m[3], m[0] * (m[1] + m[2]), 1e3] for m in einsum], float)
    stimes = np.array([m[4] * 1e9 for m in einsum])
    if len(stimes):
        sampled_ns, s_copy, s_call = _relative_nnls(sfeats, stimes)
    else:
        sampled_ns, s_copy, s_call = float("nan"), copy_ns, call_us
    return KernelCosts(dense_ns=float(dense_ns) * threads, sparse_ns=float(sparse_ns),
                       copy_ns=float(copy_ns), build_ns=float(build_ns),
                       build_nnz_ns=float(build_nnz_ns), call_us=float(call_us),
                       sampled_ns=float(sampled_ns), mask_ns=float(mask_ns),
                       sampled_copy_ns=float(s_copy), sampled_call_us=float(s_call))


def _sampled_operands(rng, rows, out, fan_in, dtype, transposed):
    dy2 = rng.standard_normal((out, rows) if transposed else (rows, out)).astype(dtype)
    x2 = rng.standard_normal((fan_in, rows) if transposed else (rows, fan_in)).astype(dtype)
    return dy2, x2


def time_sampled(rows: int, out: int, fan_in: int, dtype, repeat: int = 5, seed: int = 0,
                 grid: Sequence[float] = SUPPORT_GRID, transposed: bool = False) -> List[Tuple]:
    """Time the gathering sampled product for support fractions ``grid`` of one shape.

    Returns (rows, out, fan_in, support size, seconds, transposed) per fraction.
    """
    rng = np.random.default_rng(seed)
    dy2, x2 = _sampled_operands(rng, rows, out, fan_in, dtype, transposed)
    result = []
    for s in grid:
        support = support_structure(rng.random((out, fan_in)) < s)
        if support.nnz:
            t = _best(lambda: sampled_product_csr(dy2, x2, support, path="sparse",
                                                  transposed=transposed), repeat)
            result.append((rows, out, fan_in, support.nnz, t, transposed))
    return result


def time_blocked(rows: int, out: int, fan_in: int, dtype, repeat: int = 5, seed: int = 0,
                 fraction: float = 0.2, transposed: bool = False) -> float:
    """Seconds of the blocked dense sampled product (BLAS by row blocks) for one shape."""
    rng = np.random.default_rng(seed)
    dy2, x2 = _sampled_operands(rng, rows, out, fan_in, dtype, transposed)
    support = support_structure(rng.random((out, fan_in)) < fraction)
    return _best(lambda: sampled_product_csr(dy2, x2, support, path="dense",
                                             transposed=transposed), repeat)


def _sampled_crossing(gathered, t_blocked: float) -> float:
    """Support fraction where the gathering product becomes slower than the blocked one."""
    points = [(m[3] / (m[1] * m[2]), m[4] / t_blocked) for m in gathered]
    return crossing({"dense": 1.0, "sparse": [(frac, 1, ratio) for frac, ratio in points]})


def _is_conv(name: str) -> bool:
    """Convolutions run their products in the transposed layout (:mod:`dfbst_np.nn.fast_im2col`)."""
    return "conv" in name


def measure_crossover(dtypes: Sequence = (np.float32, np.float64),
                      layers: Sequence[Tuple[str, int, int, int]] = DEFAULT_LAYERS,
                      repeat: int = 5, seed: int = 0, verbose: bool = True) -> Dict:
    """Time the kernels, fit their costs and report the crossovers per layer.

    Takes about 20-40 s on two cores.

    Parameters
    ----------
    dtypes : sequence of float32 / float64
    layers : sequence of (name, rows, out, fan_in)
    repeat : int
        Timings per measurement; the fastest is kept.
    seed : int
    verbose : bool
        Print the tables in the format of benchmarks/README.md.

    Returns
    -------
    dict
        ``"costs"``: {numpy.dtype: KernelCosts}, ready for ``dfbst_np.sparse.costs.COSTS``;
        ``"layers"``: list of dicts (name, rows, out, fan_in, dtype,
        products, predicted, measured, sampled_predicted, sampled_measured)
        with ``predicted`` from the fitted costs and ``measured`` read off the
        timings.
    """
    costs, table = {}, []
    threads = blas_thread_count()
    for dt in map(np.dtype, dtypes):
        cases = [(layer, p) for layer in layers for p in (2, 1)]
        timings = [time_layer(rows, out, fan_in, dt, repeat, seed, products=p,
                              transposed=_is_conv(name))
                   for (name, rows, out, fan_in), p in cases]
        per_layer = [time_sampled(rows, out, fan_in, dt, repeat, seed, transposed=_is_conv(name))
                     for name, rows, out, fan_in in layers]
        sampled = [m for ms in per_layer for m in ms]
        blocked = {name: time_blocked(rows, out, fan_in, dt, repeat, seed, transposed=_is_conv(name))
                   for name, rows, out, fan_in in layers}
        measured_s = {name: _sampled_crossing(ms, blocked[name])
                      for (name, *_), ms in zip(layers, per_layer)}
        costs[dt] = fit_costs([layer for layer, _ in cases], timings, sampled, threads)
        saved = cost_model.COSTS.get(dt)
        cost_model.COSTS[dt] = costs[dt]
        try:
            for ((name, rows, out, fan_in), p), timing in zip(cases, timings):
                table.append(dict(
                    name=name, rows=rows, out=out, fan_in=fan_in, dtype=dt.name, products=p,
                    predicted=cost_model.crossover_density(rows, out, fan_in, dt, products=p,
                                                        transposed=_is_conv(name)),
                    measured=crossing(timing),
                    sampled_predicted=cost_model.sampled_crossover(rows, out, fan_in, dt,
                                                                transposed=_is_conv(name)),
                    sampled_measured=measured_s[name]))
        finally:
            if saved is None:
                del cost_model.COSTS[dt]
            else:
                cost_model.COSTS[dt] = saved
    if verbose:
        print(format_report({"costs": costs, "layers": table, "threads": threads}))
    return {"costs": costs, "layers": table, "threads": threads}


#: The quick fit of :func:`quick_costs`: the shapes that span the cost model's
#: terms (a wide linear layer, a thin and a long-row convolution, a square
#: layer), few densities, the sampled product on the linear shapes.
QUICK_LAYERS: Tuple[Tuple[str, int, int, int], ...] = (
    ("lenet300 fc1", 64, 300, 784),
    ("lenet5 conv2", 64 * 8 * 8, 50, 500),
    ("vgg16 classifier", 64, 512, 512),
    ("lenet300 fc2", 256, 100, 300),
)
QUICK_DENSITIES = (0.01, 0.03, 0.08, 0.2)
QUICK_SUPPORTS = (0.01, 0.04, 0.15)


def quick_costs(dtype, repeat: int = 3, seed: int = 0) -> KernelCosts:
    """Fit :class:`KernelCosts` for ``dtype`` on this machine in a few seconds.

    What :func:`measure_crossover` does, on :data:`QUICK_LAYERS` at
    :data:`QUICK_DENSITIES` (both products per step, one BLAS thread, inside
    a scoped limit that is restored afterwards) and the sampled product at
    :data:`QUICK_SUPPORTS`. The cost model runs it once per machine, on first
    use, and caches the result (:mod:`dfbst_np.sparse.cost_cache`).
    """
    from ..runtime import step_threads
    dt = np.dtype(dtype)
    with step_threads(1):
        timings = [time_layer(rows, out, fan_in, dt, repeat, seed, grid=QUICK_DENSITIES,
                              min_points=len(QUICK_DENSITIES), transposed=_is_conv(name))
                   for name, rows, out, fan_in in QUICK_LAYERS]
        sampled = [m for name, rows, out, fan_in in QUICK_LAYERS if not _is_conv(name)
                   for m in time_sampled(rows, out, fan_in, dt, repeat, seed, grid=QUICK_SUPPORTS)]
    return fit_costs(QUICK_LAYERS, timings, sampled, threads=1)


def format_report(result: Dict) -> str:
    """The tables of :func:`measure_crossover` as text."""
    lines = [f"costs (ns per element, dense per BLAS thread; call in us), "
             f"timed with {result.get('threads', 1)} BLAS thread(s)"]
    for dt, c in result["costs"].items():
        lines.append(f"  {dt.name}: dense {c.dense_ns:.4f}  sparse {c.sparse_ns:.3f}  "
                     f"copy {c.copy_ns:.2f}  build {c.build_ns:.2f}  build_nnz {c.build_nnz_ns:.1f}  "
                     f"call {c.call_us:.0f}  mask {c.mask_ns:.3f}  sampled {c.sampled_ns:.3f} "
                     f"(copy {c.sampled_copy_ns:.2f}, call {c.sampled_call_us:.0f})")
    lines.append("crossover density of W_hat, one step (p = 2: forward + backward-data;")
    lines.append("p = 1: forward only), and predicted crossover support fraction of the sampled product")
    lines.append(f"  {'layer':<19}{'rows':>6}{'out':>5}{'fan_in':>7}  {'dtype':<8}{'p':>2}"
                 f"{'predicted':>10}{'measured':>9}{'sampled':>8}{'(meas.)':>9}")
    for r in result["layers"]:
        lines.append(f"  {r['name']:<19}{r['rows']:>6}{r['out']:>5}{r['fan_in']:>7}  {r['dtype']:<8}"
                     f"{r.get('products', 2):>2}"
                     f"{r['predicted']:>10.3f}{r['measured']:>9.3f}{r['sampled_predicted']:>8.3f}"
                     f"{r.get('sampled_measured', float('nan')):>9.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    measure_crossover()
