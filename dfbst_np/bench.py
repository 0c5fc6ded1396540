r"""``python -m dfbst_np bench``: whole training steps, side by side, in one process.

What is timed
-------------
One training step of :class:`~dfbst_np.train.trainer.Trainer` (forward, loss,
backward with the mask rule, backward mask, clipping, SGD) of LeNet-300-100
and LeNet-5 in float32, at batch 64 and 256, for

* ``dfbst_np dense``: the unmasked network (method ``dense``);
* ``dfbst_np dst`` and ``dfbst_np dfbst`` (the exact algorithm) on the
  ``dense`` path, the ``sparse`` path and the ``auto`` choice;
* ``dfbst_np dfbst-predicted``: the accelerated approximation
  (``weight_grad="predicted"``, see :mod:`dfbst_np.sparse.masked`) on the
  three paths;

each with forward thresholds set so that every row of every masked layer
keeps the target fraction of its weights (50, 20, 10, 5, 2, 1 %; a row
keeps at least 1.25 % and one weight: at <= 1 % SPEC's reset rule would
fire and make the layer dense) and backward thresholds u set from the gradient of the timed batch so
that D keeps about the same fraction; and, when PyTorch is installed,

* ``torch reference-dfbst``: :class:`~dfbst_np.reference.ReferenceTrainer`
  on the reference model (float32 masks, as the authors'), same weights and
  thresholds;
* ``torch dense``: plain PyTorch dense training of the same network (the
  reference model with method ``dense``, i.e. ``F.linear``/``F.conv2d`` on
  the weights, ReLU, max pooling, cross-entropy, ``clip_grad_norm_`` and
  ``torch.optim.SGD`` with the reference recipe's settings), run by the
  same :class:`~dfbst_np.reference.ReferenceTrainer`. PyTorch is used only
  through :mod:`dfbst_np.reference`, the one package that imports it;
* ``dfbst_np dfbst-textbook``: ``Trainer(..., textbook=True)``, the step
  through :mod:`dfbst_np.textbook` with dense products;

all of these with the BLAS and torch threads pinned ("pinned" in the
``setting`` column); and, at :data:`UNPINNED_DENSITIES`, the library as a
user meets it, in processes where nothing pinned threads (:data:`UNPINNED`):
the DFBST step through ``dn.Trainer`` with its defaults ("library
defaults": the Trainer limits BLAS threads per step, scoped, by
:func:`dfbst_np.runtime.step_threads`), the same step with every thread the
process has ("no thread limit"), and the authors' step with torch's own
default threads.

Method
------
All variants of one (model, batch) are built first and warmed up; then the
steps are timed round-robin (every round restores each variant's state,
weights, thresholds, optimiser state, and runs a few steps of each), so
that machine load falls on all of them alike. Reported per variant: the
median step time and its spread (25th and 75th percentiles, and the
minimum), the time per part from separately instrumented steps (forward
products, backward-data products, weight gradient, masks and thresholds,
optimiser, and the rest: activations, pooling, im2col, loss, Python), the
achieved GFLOP/s (FLOPs as SPEC's cost ledger counts them for what the
variant computes: dense training 3 * 2 N numel(W); the exact mode 2 N nnz(M)
forward and backward-data plus 2 N numel(W); the predicted mode 2 N |S| for
the weight gradient; the PyTorch reference computes dense products), the
forward and backward densities actually seen, and the peak memory of a step
(bytes allocated above the step's start: ``tracemalloc`` for NumPy; the
PyTorch profiler's allocation trace for torch, an approximation).

The BLAS thread count is pinned for numpy's and scipy's BLAS (through
:mod:`dfbst_np.runtime`, i.e. threadpoolctl) and PyTorch
(``torch.set_num_threads``), and reported. The nothing-pinned rows are
timed first, each setting in a child Python process started without the
thread environment variables (:data:`THREAD_ENV`), so that neither this
process's pin nor another variant's spinning thread pool reaches them.
Nothing is asserted: ``--quick`` runs a few steps of small batches so that
CI keeps the command alive.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import tracemalloc
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from . import models as np_models
from .runtime import (STEP_THREADS, blas_thread_count, keep_freed_memory, pinned_blas_threads,
                      set_blas_threads)
from .methods import dfbst as dfbst_mod, thresholds as thresholds_mod
from .sparse import kernels
from .sparse.ledger import LayerCost
from .sparse.masked import masked_layers
from .train import trainer as trainer_mod
from .train.trainer import Trainer

DENSITIES = (0.5, 0.2, 0.1, 0.05, 0.02, 0.01)
#: Densities of the nothing-pinned comparison (library defaults vs pinned vs the authors').
UNPINNED_DENSITIES = (0.1,)
MODELS = ("lenet300_100", "lenet_5")
BATCHES = (64, 256)
PATHS = ("dense", "sparse", "auto")
PARTS = ("forward", "backward_data", "weight_grad", "masks", "optimiser", "other")
INPUT_SHAPE = (1, 28, 28)
RECIPE = dict(lr=0.1, momentum=0.9, weight_decay=1e-4, alpha=5e-6, beta=0.1, clip_norm=1.0)


# --------------------------------------------------------------------------
# threads and machine
# --------------------------------------------------------------------------

def set_threads(n: int) -> Dict[str, object]:
    """Pin BLAS threads (numpy's and scipy's OpenBLAS) and torch's, if loaded, to n.

    Returns what each library reports afterwards.
    """
    report = set_blas_threads(n)
    keep_freed_memory()
    torch = _torch()
    if torch is not None:
        torch.set_num_threads(int(n))
        report["torch"] = torch.get_num_threads()
    return report


def machine() -> Dict[str, str]:
    """CPU model, logical CPUs, Python and library versions."""
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import scipy
    info = {"cpu": model, "logical_cpus": str(os.cpu_count()), "python": platform.python_version(),
            "numpy": np.__version__, "scipy": scipy.__version__}
    torch = _torch()
    if torch is not None:
        info["torch"] = torch.__version__
    return info


def _torch():
    """torch as loaded by :mod:`dfbst_np.reference` (the one package that imports it), or None."""
    try:
        from . import reference  # noqa: F401
    except ImportError:
        return None
    return sys.modules.get("torch")


# --------------------------------------------------------------------------
# variants
# --------------------------------------------------------------------------

@dataclass
class Variant:
    """One thing to time: a step function, a state restorer and some facts."""
    impl: str                     # "dfbst_np" or "torch"
    name: str                     # e.g. "dfbst", "dfbst-predicted", "reference-dfbst", "dense"
    path: str                     # kernel path, "-" where there is none
    density: float                # target forward density (1.0 for dense variants)
    step: Callable[[], object]
    restore: Callable[[], None]
    flops: Callable[[], float] = lambda: float("nan")
    densities: Callable[[], tuple] = lambda: (float("nan"), float("nan"))
    trainer: Optional[Trainer] = None
    setting: str = "pinned"       # or "library defaults" / "no thread limit" (UNPINNED)
    threads: Optional[int] = None  # BLAS (torch) threads inside the step when not the run's pin
    times: List[float] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.impl} {self.name}" + (f" [{self.path}]" if self.path != "-" else "")


def _keep_per_row(fan_in: int, density: float) -> int:
    """Weights per row for a target density, at least 1.25 % of the row: SPEC's reset
    rule zeroes t (and M becomes all ones) as soon as a layer keeps <= 1 %, and the
    density drifts by a few weights per row during a round of steps."""
    return min(fan_in, max(int(round(density * fan_in)), int(np.ceil(0.0125 * fan_in)), 1))


def set_forward_density(model, density: float) -> None:
    """Thresholds t (positive) that keep the largest ``density`` of |W| in every row."""
    for _, layer in masked_layers(model):
        if layer.method == "dense":
            continue
        a = np.sort(np.abs(layer.weight2d), axis=1)
        k = _keep_per_row(a.shape[1], density)
        # halfway between the last dropped and the first kept magnitude
        lo = a[:, a.shape[1] - k - 1] if k < a.shape[1] else np.zeros(a.shape[0], a.dtype)
        hi = a[:, a.shape[1] - k]
        layer.params["threshold"][...] = ((lo + hi) / 2).astype(layer.dtype) if k < a.shape[1] else 0


def set_backward_density(model, x, y, density: float) -> None:
    """u that keeps about ``density`` of |Ghat| per row, from this batch's gradient dW."""
    from .nn.loss import CrossEntropyLoss
    model.train()
    model.zero_grad()
    loss = CrossEntropyLoss(dtype=x.dtype)
    loss.forward(model.forward(x), y)
    model.backward(loss.backward())
    for _, layer in masked_layers(model):
        if layer.method != "dfbst":
            continue
        dW = layer.grads["weight"].reshape(layer.weight.shape[0], -1).astype(np.float64)
        r = np.abs(dW).sum(axis=1, keepdims=True)
        ghat = np.sort(np.divide(np.abs(dW), r, out=np.zeros_like(dW), where=r != 0), axis=1)
        k = _keep_per_row(ghat.shape[1], density)
        lo = ghat[:, ghat.shape[1] - k - 1] if k < ghat.shape[1] else np.zeros(ghat.shape[0])
        hi = ghat[:, ghat.shape[1] - k]
        layer.params["dthreshold"][...] = (lo + hi) / 2 if k < ghat.shape[1] else -1.0
    model.zero_grad()


def _np_flops(tr: Trainer, predicted: bool) -> float:
    """FLOPs of the last step as the cost ledger counts what this variant computes.

    Dense layers: the ledger's dense training; the exact mode: its exact count
    (dense weight gradient); the predicted mode computes A on its support S,
    so S takes D's place in the ledger's ideal count.
    """
    total = 0
    for name, layer in tr.layers:
        numel = layer.weight.size
        if layer.method == "dense":
            total += LayerCost(name, layer.rows, numel, numel, numel).dense_flops
            continue
        g = layer.loss_grad()
        if predicted and not g.full:
            total += LayerCost(name, layer.rows, numel, layer.mask_nnz, g.values.size).ideal_flops
        else:
            total += LayerCost(name, layer.rows, numel, layer.mask_nnz, numel).exact_flops
    return float(total)


def _np_densities(tr: Trainer) -> tuple:
    layers = [layer for _, layer in tr.layers]
    size = sum(l.weight.size for l in layers) or 1
    fwd = sum(l.mask_nnz for l in layers) / size
    bwd = sum((l.dmask_nnz if l.dmask_nnz is not None else l.weight.size) for l in layers) / size
    return fwd, bwd


def numpy_variant(model_name, method, path, density, batch, data, weight_grad="exact",
                  name: Optional[str] = None, **trainer_kw) -> Variant:
    """A dfbst_np step of ``method`` on kernel ``path``; ``trainer_kw`` go to :class:`Trainer`
    (e.g. ``textbook=True``, ``blas_threads``); ``name`` overrides the variant's name."""
    x, y = data
    model = np_models.build(model_name, method=method, dtype=np.float32, kernel_path=None
                            if path == "-" else path, rng=np.random.default_rng(7),
                            weight_grad=weight_grad, textbook=trainer_kw.pop("textbook", False))
    if method != "dense":
        set_forward_density(model, density)
        if method == "dfbst":
            set_backward_density(model, x, y, density)
    tr = Trainer(model, **RECIPE, **trainer_kw)
    counter = {"i": 0}

    def step():
        counter["i"] += 1
        return tr.step(x, y, epoch=2, index=counter["i"])     # a full step: beta * V_prev included

    step()                                                     # D and V_prev exist from here on
    snapshot = _np_snapshot(tr)
    if name is None:
        name = method + ("-predicted" if weight_grad == "predicted" else "")
    return Variant("dfbst_np", name, path, density if method != "dense" else 1.0, step,
                   lambda: _np_restore(tr, snapshot),
                   flops=lambda: _np_flops(tr, weight_grad == "predicted"),
                   densities=lambda: _np_densities(tr), trainer=tr)


def _np_snapshot(tr: Trainer):
    import copy
    layers = {name: layer.backward_mask for name, layer in tr.layers}
    return (tr.model.state_dict(), tr.optimizer.state_dict(), copy.deepcopy(tr.method_state), layers)


def _np_restore(tr: Trainer, snapshot) -> None:
    state, optim, prev, layers = snapshot
    tr.model.load_state_dict(state)
    tr.optimizer.load_state_dict(optim)
    tr.method_state = prev
    for name, layer in tr.layers:
        layer.set_backward_mask(layers[name])


def _dense_flops(np_dense: Variant) -> float:
    """Dense training FLOPs of the (already stepped) dfbst_np dense model, by the ledger."""
    return _np_flops(np_dense.trainer, predicted=False)


def _reference_variant(model_name, method, density, data, np_variant: Variant, np_dense: Variant,
                       name: str) -> Variant:
    """A step of :class:`~dfbst_np.reference.ReferenceTrainer` on the same weights and thresholds."""
    import copy
    from .reference import ReferenceTrainer, build
    from .reference.convert import to_torch_state_dict
    from .reference.layers import masked_layers as ref_masked_layers
    torch = _torch()
    model = build(model_name, method=method, dtype=torch.float32, float32_masks=True)
    model.load_state_dict(to_torch_state_dict(np_variant.trainer.model.state_dict(), like=model))
    tr = ReferenceTrainer(model, **RECIPE)
    x, y = data
    counter = {"i": 0}

    def step():
        counter["i"] += 1
        return tr.step(x, y, epoch=2, index=counter["i"])

    step()
    snap = (copy.deepcopy(model.state_dict()), copy.deepcopy(tr.optimizer.state_dict()))

    def restore():
        model.load_state_dict(snap[0])
        tr.optimizer.load_state_dict(snap[1])

    layers = [m for _, m in ref_masked_layers(model)]

    def densities():
        size = sum(m.weight.numel() for m in layers)
        f = sum(float(m.mask.sum()) if m.mask is not None else m.weight.numel() for m in layers)
        b = sum(float(m.dmask.sum()) if m.dmask is not None else m.weight.numel() for m in layers)
        return f / size, b / size

    return Variant("torch", name, "-", density, step, restore,
                   flops=lambda: _dense_flops(np_dense), densities=densities)


def torch_dense_variant(model_name, data, np_dense: Variant) -> Variant:
    """Plain PyTorch dense training of the same network: the reference model with method
    ``dense`` (``F.linear``/``F.conv2d`` on the weight itself), cross-entropy, backward,
    ``clip_grad_norm_`` and ``torch.optim.SGD`` with the recipe's settings."""
    return _reference_variant(model_name, "dense", 1.0, data, np_dense, np_dense, "dense")


def torch_reference_variant(model_name, density, data, np_variant: Variant, np_dense: Variant) -> Variant:
    """The PyTorch reference's DFBST step (float32 masks, as the authors'), same weights and thresholds."""
    return _reference_variant(model_name, "dfbst", density, data, np_variant, np_dense,
                              "reference-dfbst")


# --------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------

def time_round_robin(variants: Sequence[Variant], warmup: int, rounds: int, steps: int,
                     progress: Callable[[str], None] = lambda s: None) -> None:
    """Warm every variant up, then time ``rounds`` x ``steps`` steps of each, interleaved."""
    for v in variants:
        v.restore()
        for _ in range(warmup):
            v.step()
    for r in range(rounds):
        for v in variants:
            v.restore()
            for _ in range(steps):
                t0 = time.perf_counter()
                v.step()
                v.times.append(time.perf_counter() - t0)
        progress(f"round {r + 1}/{rounds}")


class _PartTimer:
    def __init__(self):
        self.acc = dict.fromkeys(PARTS, 0.0)

    def wrap(self, part, fn):
        acc = self.acc
        perf = time.perf_counter

        def wrapped(*args, **kwargs):
            t0 = perf()
            try:
                return fn(*args, **kwargs)
            finally:
                acc[part] += perf() - t0
        return wrapped


@contextmanager
def _instrumented(v: Variant, timer: _PartTimer):
    """Patch the step's building blocks so that each reports its time to ``timer``."""
    from .nn import linear as nn_linear
    tr = v.trainer
    patches = [
        (kernels, "prepare_weight", "forward"),
        (kernels.MaskedWeight, "forward", "forward"),
        (kernels.MaskedWeight, "backward_data", "backward_data"),
        (nn_linear.WeightLayer, "_weight_product", "forward"),
        (kernels, "dense_backward_data", "backward_data"),
        (kernels, "dense_forward_t", "forward"),
        (kernels, "dense_backward_data_t", "backward_data"),
        (kernels.MaskedWeight, "forward_t", "forward"),
        (kernels.MaskedWeight, "backward_data_t", "backward_data"),
        (kernels, "weight_gradient", "weight_grad"),
        (kernels, "weight_gradient_t", "weight_grad"),
        (kernels, "sampled_product_csr", "weight_grad"),
        (kernels, "support_structure", "weight_grad"),
        (thresholds_mod, "forward_mask", "masks"),
        (thresholds_mod, "layer_grads", "masks"),
        (thresholds_mod, "threshold_penalty", "masks"),
        (dfbst_mod.BackwardMaskHooks, "gradient_mask", "masks"),
        (Trainer, "_checked_norm", "optimiser"),
        (trainer_mod, "clip_grad_norm", "optimiser"),
    ]
    saved = []
    try:
        for owner, attr, part in patches:
            original = owner.__dict__[attr]
            saved.append((owner, attr, original))
            fn = original.__func__ if isinstance(original, staticmethod) else original
            wrapped = timer.wrap(part, fn)
            setattr(owner, attr, staticmethod(wrapped) if isinstance(original, staticmethod) else wrapped)
        opt_step = tr.optimizer.step
        tr.optimizer.step = timer.wrap("optimiser", opt_step)
        yield
    finally:
        for owner, attr, original in reversed(saved):
            setattr(owner, attr, original)
        tr.optimizer.__dict__.pop("step", None)


def part_times(v: Variant, steps: int) -> Dict[str, float]:
    """Mean seconds per step of each part (``other``: the rest of the step)."""
    timer = _PartTimer()
    v.restore()
    total = 0.0
    with _instrumented(v, timer):
        for _ in range(steps):
            t0 = time.perf_counter()
            v.step()
            total += time.perf_counter() - t0
    parts = {k: val / steps for k, val in timer.acc.items()}
    parts["other"] = max(0.0, total / steps - sum(parts[k] for k in PARTS if k != "other"))
    return parts


# What torch writes to stderr (file descriptor 2, from C++) around every memory-profiled
# step, none of it about the run: kineto logs each profiler start and stop
# ("USDT: ... SyncActivityProfilerHandler.cpp ... profiler_start"), and c10's CPU allocator
# warns once that blocks allocated before profiling started will not be counted (they
# are not meant to be: the peak is taken above the step's start). Neither can be turned
# off from Python once torch is loaded.
_PROFILER_NOISE = re.compile(r"SyncActivityProfilerHandler|\] profiler_st(art|op)\b|"
                             r"allocated before the profiling started")


@contextmanager
def _without_profiler_noise():
    """Hold back the profiler's own lines on stderr; pass every other line on."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not _PROFILER_NOISE.search(line):
                    sys.stderr.write(line)


def peak_memory(v: Variant) -> float:
    """Peak bytes allocated during one step above what was live at its start."""
    v.restore()
    if v.impl == "dfbst_np":
        tracemalloc.start()
        try:
            start = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            v.step()
            return float(tracemalloc.get_traced_memory()[1] - start)
        finally:
            tracemalloc.stop()
    torch = _torch()
    try:
        profiler = torch.profiler
        with _without_profiler_noise(), \
                profiler.profile(activities=[profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
            v.step()
        cur = peak = 0
        for e in sorted(prof.events(), key=lambda e: e.time_range.start):
            cur += e.self_cpu_memory_usage
            peak = max(peak, cur)
        return float(peak)
    except Exception:  # pragma: no cover - a torch without the profiler
        return float("nan")


# --------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------

def _batch(batch: int, seed: int = 0):
    """The timed batch: uniform images and random labels."""
    rng = np.random.default_rng(seed)
    return rng.random((batch,) + INPUT_SHAPE, dtype=np.float32), rng.integers(0, 10, batch)


def build_variants(model_name: str, batch: int, densities: Sequence[float], paths: Sequence[str],
                   with_torch: bool, seed: int = 0) -> List[Variant]:
    data = _batch(batch, seed)
    np_dense = numpy_variant(model_name, "dense", "-", 1.0, batch, data)
    variants = [np_dense]
    if with_torch:
        variants.append(torch_dense_variant(model_name, data, np_dense))
    for d in densities:
        for method, wg in (("dst", "exact"), ("dfbst", "exact"), ("dfbst", "predicted")):
            for path in paths:
                variants.append(numpy_variant(model_name, method, path, d, batch, data, wg))
                if with_torch and method == "dfbst" and wg == "exact" and path == paths[0]:
                    variants.append(torch_reference_variant(model_name, d, data, variants[-1], np_dense))
        variants.append(numpy_variant(model_name, "dfbst", "-", d, batch, data,
                                      name="dfbst-textbook", textbook=True))
    return variants


def summarise(v: Variant, model_name: str, batch: int, threads: int, parts: Dict[str, float],
              memory: float) -> Dict[str, object]:
    t = np.array(v.times)
    med = float(np.median(t))
    fwd, bwd = v.densities()
    flops = v.flops()
    row = dict(model=model_name, batch=batch, setting=v.setting,
               threads=threads if v.threads is None else v.threads, impl=v.impl, variant=v.name,
               path=v.path, target_density=v.density, fwd_density=fwd, bwd_density=bwd,
               median_ms=med * 1e3, p25_ms=float(np.percentile(t, 25)) * 1e3,
               p75_ms=float(np.percentile(t, 75)) * 1e3, min_ms=float(t.min()) * 1e3,
               steps=len(t), gflops=flops / med / 1e9 if med > 0 else float("nan"),
               peak_mem_mb=memory / 2 ** 20)
    for k in PARTS:
        row[f"{k}_ms"] = parts.get(k, float("nan")) * 1e3 if parts else float("nan")
    return row


# --------------------------------------------------------------------------
# nothing pinned: the library as a user meets it
# --------------------------------------------------------------------------

#: Environment variables through which BLAS threads are pinned before Python
#: starts; the nothing-pinned process runs without them.
THREAD_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


#: The nothing-pinned variants, each timed in a process of its own (an OpenBLAS
#: or OpenMP thread pool left spinning by one variant would slow the next):
#: (setting, impl, what it is).
UNPINNED = (("library defaults", "dfbst_np", "dn.Trainer as a library user gets it: the Trainer "
             "limits BLAS threads per step by itself, scoped"),
            ("no thread limit", "dfbst_np", "the same step with the limit lifted to every thread "
             "the process has (what the library did before)"),
            ("library defaults", "torch", "the authors' step with torch's own default threads"))


def unpinned_variants(setting: str, impl: str, model_name: str, batch: int,
                      densities: Sequence[float]) -> List[Variant]:
    """The DFBST steps of one :data:`UNPINNED` entry (call only in a process nothing pinned)."""
    data = _batch(batch)
    variants = []
    for d in densities:
        if impl == "torch":
            ours = numpy_variant(model_name, "dfbst", "auto", d, batch, data)   # weights, thresholds
            np_dense = numpy_variant(model_name, "dense", "-", 1.0, batch, data)  # FLOPs
            v = torch_reference_variant(model_name, d, data, ours, np_dense)
            v.threads = _torch().get_num_threads()
        elif setting == "library defaults":
            v = numpy_variant(model_name, "dfbst", "auto", d, batch, data)
            v.threads = STEP_THREADS
        else:
            every = blas_thread_count()
            v = numpy_variant(model_name, "dfbst", "auto", d, batch, data, blas_threads=every)
            v.threads = every
        v.setting = setting
        variants.append(v)
    return variants


def _unpinned_main(spec_path: str) -> None:
    """Entry point of a nothing-pinned process: time one :data:`UNPINNED` entry, write JSON."""
    with open(spec_path) as f:
        spec = json.load(f)
    if pinned_blas_threads() is not None:      # nobody may have pinned this process
        raise RuntimeError("bench: the nothing-pinned process was pinned")
    rows = []
    for model_name in spec["models"]:
        for batch in spec["batches"]:
            variants = unpinned_variants(spec["setting"], spec["impl"], model_name, batch,
                                         spec["densities"])
            time_round_robin(variants, spec["warmup"], spec["rounds"], spec["steps"])
            rows += [summarise(v, model_name, batch, v.threads, {}, float("nan")) for v in variants]
    torch = sys.modules.get("torch")
    threads = {"blas": blas_thread_count(), "torch": torch.get_num_threads() if torch else None}
    with open(spec["out"], "w") as f:
        json.dump({"rows": rows, "threads": threads}, f)


def run_unpinned(models: Sequence[str], batches: Sequence[int], densities: Sequence[float],
                 with_torch: bool, warmup: int, rounds: int, steps: int) -> Dict[str, object]:
    """Time the :data:`UNPINNED` variants, each in a fresh Python process that pins nothing.

    The bench pins threads for its other rows, so these run in child
    processes started without :data:`THREAD_ENV`. Returns {"rows", "threads"}
    (the children's BLAS and torch thread counts outside a step).
    """
    rows, threads = [], {}
    env = {k: v for k, v in os.environ.items() if k not in THREAD_ENV}
    code = "import sys; from dfbst_np.bench import _unpinned_main; _unpinned_main(sys.argv[1])"
    with tempfile.TemporaryDirectory() as tmp:
        for i, (setting, impl, _) in enumerate(UNPINNED):
            if impl == "torch" and not with_torch:
                continue
            spec_path, out = os.path.join(tmp, f"spec{i}.json"), os.path.join(tmp, f"rows{i}.json")
            with open(spec_path, "w") as f:
                json.dump(dict(setting=setting, impl=impl, models=list(models), batches=list(batches),
                               densities=list(densities), warmup=warmup, rounds=rounds,
                               steps=steps, out=out), f)
            r = subprocess.run([sys.executable, "-c", code, spec_path], env=env,
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"bench: the nothing-pinned process ({setting}, {impl}) "
                                   f"failed:\n{r.stderr[-3000:]}")
            with open(out) as f:
                result = json.load(f)
            rows += result["rows"]
            threads["blas"] = result["threads"]["blas"]
            if result["threads"]["torch"] is not None:
                threads["torch"] = result["threads"]["torch"]
    return {"rows": rows, "threads": threads}


def run(models: Sequence[str] = MODELS, batches: Sequence[int] = BATCHES,
        densities: Sequence[float] = DENSITIES, paths: Sequence[str] = PATHS, threads: int = 1,
        warmup: int = 5, rounds: int = 6, steps: int = 5, part_steps: int = 5,
        with_torch: bool = True, unpinned_densities: Sequence[float] = UNPINNED_DENSITIES,
        log: Callable[[str], None] = print) -> Dict[str, object]:
    """Run the benchmark; returns {"rows", "machine", "threads", "unpinned_threads"}.

    First the nothing-pinned rows (in a child process, at ``unpinned_densities``),
    then this process pins ``threads`` and times every other variant.
    """
    if with_torch and _torch() is None:
        log("PyTorch is not installed: the torch variants are skipped")
        with_torch = False
    rows, unpinned = [], {"threads": None}
    if unpinned_densities:
        t0 = time.perf_counter()
        unpinned = run_unpinned(models, batches, unpinned_densities, with_torch, warmup, rounds, steps)
        rows += unpinned["rows"]
        log(f"nothing pinned (child process; threads outside a step {unpinned['threads']}): "
            f"{len(unpinned['rows'])} variants, {time.perf_counter() - t0:.0f} s")
    reported = set_threads(threads)
    info = machine()
    log(f"machine: {info['cpu']}, {info['logical_cpus']} logical CPUs; BLAS threads {reported}")
    for model_name in models:
        for batch in batches:
            t0 = time.perf_counter()
            variants = build_variants(model_name, batch, densities, paths, with_torch)
            time_round_robin(variants, warmup, rounds, steps)
            for v in variants:
                parts = part_times(v, part_steps) if v.impl == "dfbst_np" else {}
                rows.append(summarise(v, model_name, batch, threads, parts, peak_memory(v)))
            log(f"{model_name} batch {batch}: {len(variants)} variants, "
                f"{time.perf_counter() - t0:.0f} s")
    return {"rows": rows, "machine": info, "threads": reported, "unpinned_threads": unpinned["threads"]}


# --------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------

COLUMNS = ("model", "batch", "setting", "threads", "impl", "variant", "path", "target_density", "fwd_density",
           "bwd_density", "median_ms", "p25_ms", "p75_ms", "min_ms", "steps", "gflops",
           "peak_mem_mb") + tuple(f"{p}_ms" for p in PARTS)


def write_csv(rows, path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def _find(rows, **kw):
    return [r for r in rows if all(r[k] == v for k, v in kw.items())]


def _pinned(rows):
    return [r for r in rows if r.get("setting", "pinned") == "pinned"]


def _log_axis(axis, ticks=None) -> None:
    """Plain-number labels on a log axis: at ``ticks`` if given, else at 1, 2, 5 x 10^k."""
    from matplotlib import ticker
    if ticks is not None:
        axis.set_major_locator(ticker.FixedLocator(sorted(ticks)))
    else:
        axis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


def plot(rows, path, threads: Optional[int] = None) -> None:
    """Step time against forward density, one panel per (model, batch).

    Pinned rows as lines; the textbook trainer's step as a grey line; the
    nothing-pinned rows (library defaults, no thread limit, the authors' step
    with torch's default threads) as single markers.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    unpinned = [r for r in rows if r.get("setting", "pinned") != "pinned"]
    rows = _pinned(rows)
    groups = sorted({(r["model"], r["batch"]) for r in rows}, key=lambda g: (MODELS.index(g[0])
                    if g[0] in MODELS else 9, g[1]))
    ncols = 2 if len(groups) > 1 else 1
    nrows = -(-len(groups) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.5 * ncols, 4.8 * nrows), squeeze=False)
    axes = [list(axes.ravel())]
    styles = {"dense": ":", "sparse": "--", "auto": "-"}
    colors = {"dst": "tab:blue", "dfbst": "tab:orange", "dfbst-predicted": "tab:green"}
    markers = {("dfbst_np", "library defaults"): ("*", "tab:orange", "dfbst_np dfbst [auto], nothing pinned"),
               ("dfbst_np", "no thread limit"): ("X", "tab:brown", "dfbst_np dfbst [auto], no thread limit"),
               ("torch", "library defaults"): ("P", "tab:purple", "torch reference dfbst, torch's default threads")}
    for ax, (m, b) in zip(axes[0], groups):
        sub = _find(rows, model=m, batch=b)
        for name, color in colors.items():
            for p, ls in styles.items():
                pts = sorted((r["target_density"], r["median_ms"]) for r in sub
                             if r["impl"] == "dfbst_np" and r["variant"] == name and r["path"] == p)
                if pts:
                    ax.plot(*zip(*pts), ls=ls, marker="o", ms=3, color=color,
                            label=f"dfbst_np {name} [{p}]")
        for impl, name, color in (("dfbst_np", "dense", "black"), ("torch", "dense", "tab:red")):
            for r in _find(sub, impl=impl, variant=name):
                ax.axhline(r["median_ms"], color=color, ls="-." if impl == "torch" else "-", lw=1,
                           label=f"{impl} dense")
        for name, color, ms, label in (("reference-dfbst", "tab:purple", "s", "torch reference dfbst"),
                                       ("dfbst-textbook", "grey", "d", "dfbst_np textbook trainer")):
            pts = sorted((r["target_density"], r["median_ms"]) for r in _find(sub, variant=name))
            if pts:
                ax.plot(*zip(*pts), color=color, marker=ms, ms=3, label=label)
        for r in _find(unpinned, model=m, batch=b):
            marker, color, label = markers[(r["impl"], r["setting"])]
            ax.plot([r["target_density"]], [r["median_ms"]], ls="none", marker=marker, ms=9,
                    color=color, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        _log_axis(ax.xaxis, {r["target_density"] for r in sub})
        _log_axis(ax.yaxis)
        ax.set_xlabel("forward density (target fraction of weights kept)")
        ax.set_ylabel("training step, median ms")
        ax.set_title(f"{m}, batch {b}")
        ax.grid(True, which="both", alpha=0.3)
    for ax in axes[0][len(groups):]:
        ax.axis("off")
    handles = {}
    for ax in axes[0][:len(groups)]:
        for h, l in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(l, h)
    legend_in = 0.2 * -(-len(handles) // 4) + 0.7          # legend rows and the x label
    fig.set_size_inches(6.5 * ncols, 4.8 * nrows + legend_in)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=4, fontsize=8,
               frameon=False)
    models = ", ".join(dict.fromkeys(m for m, _ in groups))
    batches = ", ".join(str(b) for b in sorted({b for _, b in groups}))
    pin = f"{threads} BLAS and torch thread(s) pinned" if threads else "threads pinned"
    fig.suptitle(f"One training step (forward, loss, backward, masks, clipping, SGD), float32: "
                 f"{models}; batch {batches}; {pin}\n(markers: a process with nothing pinned); "
                 f"median of the timed steps on a shared machine", fontsize=10)
    fig.tight_layout(rect=(0, (legend_in - 0.45) / (4.8 * nrows + legend_in), 1, 0.95))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown_table(rows, models=MODELS) -> str:
    """One line per (model, batch, density): median ms of every pinned variant (auto path
    unless named)."""
    rows = _pinned(rows)
    cols = [("dfbst_np", "dense", "-", "np dense"), ("torch", "dense", "-", "torch dense"),
            ("torch", "reference-dfbst", "-", "torch ref DFBST"),
            ("dfbst_np", "dst", "auto", "DST auto"),
            ("dfbst_np", "dfbst", "dense", "DFBST dense"), ("dfbst_np", "dfbst", "sparse", "DFBST sparse"),
            ("dfbst_np", "dfbst", "auto", "DFBST auto"),
            ("dfbst_np", "dfbst-predicted", "dense", "pred. dense"),
            ("dfbst_np", "dfbst-predicted", "sparse", "pred. sparse"),
            ("dfbst_np", "dfbst-predicted", "auto", "pred. auto"),
            ("dfbst_np", "dfbst-textbook", "-", "textbook")]
    lines = ["| model | batch | density (fwd/bwd) | " + " | ".join(c[3] for c in cols) + " |",
             "|---|---|---|" + "---|" * len(cols)]
    groups = sorted({(r["model"], r["batch"]) for r in rows},
                    key=lambda g: (models.index(g[0]) if g[0] in models else 9, g[1]))
    for m, b in groups:
        sub = _find(rows, model=m, batch=b)
        dens = sorted({r["target_density"] for r in sub if r["variant"] == "dfbst"}, reverse=True)
        for d in dens:
            cells = []
            for impl, name, path, _ in cols:
                hit = [r for r in sub if r["impl"] == impl and r["variant"] == name and r["path"] == path
                       and (name == "dense" or r["target_density"] == d)]
                cells.append(f"{hit[0]['median_ms']:.2f}" if hit else "")
            ref = [r for r in sub if r["variant"] == "dfbst" and r["path"] == "auto" and r["target_density"] == d]
            seen = f"{ref[0]['fwd_density']:.3f}/{ref[0]['bwd_density']:.3f}" if ref else f"{d:g}"
            lines.append(f"| {m} | {b} | {seen} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parts_table(rows) -> str:
    """Time per part (ms) of the pinned DFBST variants on the auto path (and the textbook's)."""
    rows = _pinned(rows)
    lines = ["| model | batch | variant | density | step | " + " | ".join(PARTS) + " | GFLOP/s | peak MB |",
             "|---|---|---|---|---|" + "---|" * (len(PARTS) + 2)]
    for r in rows:
        if r["impl"] != "dfbst_np" or (r["path"] not in ("auto", "-")):
            continue
        lines.append(f"| {r['model']} | {r['batch']} | {r['variant']} | {r['target_density']:g} | "
                     f"{r['median_ms']:.2f} | " + " | ".join(f"{r[p + '_ms']:.2f}" for p in PARTS)
                     + f" | {r['gflops']:.1f} | {r['peak_mem_mb']:.1f} |")
    return "\n".join(lines)


def defaults_table(rows, models=MODELS) -> str:
    """Library defaults against pinned threads and the authors' step, one line per
    (model, batch, density) of the nothing-pinned rows: median ms (threads in the step)."""
    unpinned = [r for r in rows if r.get("setting", "pinned") != "pinned"]
    pinned = _pinned(rows)
    cols = [(unpinned, "dfbst_np", "dfbst", "library defaults", "DFBST, nothing pinned"),
            (unpinned, "dfbst_np", "dfbst", "no thread limit", "DFBST, nothing pinned, no thread limit"),
            (pinned, "dfbst_np", "dfbst", "pinned", "DFBST, pinned"),
            (unpinned, "torch", "reference-dfbst", "library defaults", "authors' step, torch defaults"),
            (pinned, "torch", "reference-dfbst", "pinned", "authors' step, pinned"),
            (pinned, "dfbst_np", "dfbst-textbook", "pinned", "textbook trainer, pinned")]
    lines = ["| model | batch | density | " + " | ".join(c[4] for c in cols)
             + " | nothing pinned: authors' / ours |", "|---|---|---|" + "---|" * (len(cols) + 1)]
    groups = sorted({(r["model"], r["batch"], r["target_density"]) for r in unpinned},
                    key=lambda g: (models.index(g[0]) if g[0] in models else 9, g[1], -g[2]))
    for m, b, d in groups:
        cells, med = [], {}
        for src, impl, name, setting, label in cols:
            hit = [r for r in _find(src, model=m, batch=b, impl=impl, variant=name,
                                    target_density=d, setting=setting)
                   if r["path"] in ("auto", "-")]
            if hit:
                med[label] = hit[0]["median_ms"]
                cells.append(f"{hit[0]['median_ms']:.2f} ({hit[0]['threads']})")
            else:
                cells.append("")
        ours, theirs = med.get(cols[0][4]), med.get(cols[3][4])
        ratio = f"{theirs / ours:.2f}x" if ours and theirs else ""
        lines.append(f"| {m} | {b} | {d:g} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines)


def targets(rows) -> List[str]:
    """The issue's targets, read off this run's pinned rows (reported, never asserted)."""
    rows = _pinned(rows)
    out = []

    def med(**kw):
        hit = _find(rows, **kw)
        return hit[0]["median_ms"] if hit else None

    # 1. exact DFBST, LeNet-300-100, batch 64, density <= 15 %: >= 2x faster than the reference
    for d in sorted({r["target_density"] for r in rows if r["variant"] == "dfbst"}, reverse=True):
        if d > 0.15:
            continue
        ours = med(model="lenet300_100", batch=64, impl="dfbst_np", variant="dfbst", path="auto",
                   target_density=d)
        ref = med(model="lenet300_100", batch=64, impl="torch", variant="reference-dfbst", target_density=d)
        if ours and ref:
            out.append(f"exact DFBST LeNet-300-100 b64 @{d:g}: {ours:.2f} ms vs reference "
                       f"{ref:.2f} ms = {ref / ours:.2f}x (target >= 2x): "
                       f"{'met' if ref / ours >= 2 else 'NOT met'}")
    # 2. predicted at <= 10 %: faster than torch dense (LeNet-300-100), no slower (LeNet-5)
    for m in MODELS:
        for b in sorted({r["batch"] for r in rows if r["model"] == m}):
            dense = med(model=m, batch=b, impl="torch", variant="dense")
            if dense is None:
                continue
            for d in sorted({r["target_density"] for r in rows if r["variant"] == "dfbst-predicted"},
                            reverse=True):
                if d > 0.10:
                    continue
                ours = med(model=m, batch=b, impl="dfbst_np", variant="dfbst-predicted", path="auto",
                           target_density=d)
                if ours is None:
                    continue
                ok = ours < dense if m == "lenet300_100" else ours <= dense
                out.append(f"predicted {m} b{b} @{d:g}: {ours:.2f} ms vs torch dense {dense:.2f} ms "
                           f"({dense / ours:.2f}x; target {'faster' if m == 'lenet300_100' else 'no slower'}): "
                           f"{'met' if ok else 'NOT met'}")
    # 3. auto never more than 10 % slower than the better of dense and sparse
    worst = None
    for r in rows:
        if r["impl"] != "dfbst_np" or r["path"] != "auto":
            continue
        same = dict(model=r["model"], batch=r["batch"], variant=r["variant"], target_density=r["target_density"])
        best = min(x for x in (med(path="dense", **same), med(path="sparse", **same)) if x is not None)
        ratio = r["median_ms"] / best
        if worst is None or ratio > worst[0]:
            worst = (ratio, r)
    if worst is not None:
        ratio, r = worst
        out.append(f"auto vs best of dense/sparse, worst case: {ratio:.3f} ({r['model']} b{r['batch']} "
                   f"{r['variant']} @{r['target_density']:g}; target <= 1.10): "
                   f"{'met' if ratio <= 1.10 else 'NOT met'}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m dfbst_np bench", description=__doc__.split("\n")[0])
    add_arguments(p)
    return run_cli(p.parse_args(argv))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true",
                   help="a few steps of batch 8 at two densities (CI): timings printed only, no "
                        "file written unless --out is given")
    p.add_argument("--threads", type=int, default=1, help="BLAS / torch threads (default: 1)")
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS),
                   help=f"networks to time (default: {' '.join(MODELS)})")
    p.add_argument("--batches", nargs="+", type=int,
                   help=f"batch sizes (default: {' '.join(map(str, BATCHES))}; --quick 8)")
    p.add_argument("--densities", nargs="+", type=float,
                   help=f"target forward densities (default: {' '.join(f'{d:g}' for d in DENSITIES)}; "
                        "--quick 0.2 0.02)")
    p.add_argument("--no-torch", action="store_true",
                   help="skip the PyTorch variants (default: time them when torch is installed)")
    p.add_argument("--rounds", type=int,
                   help="round-robin rounds over all variants (default: 6; --quick 2)")
    p.add_argument("--steps", type=int,
                   help="timed steps per variant per round (default: 5; --quick 2)")
    p.add_argument("--out", help="folder for bench.csv and bench.png (bench-quick.* with --quick) "
                                 "(default: benchmarks; with --quick none: nothing is written)")
    p.add_argument("--unpinned-densities", nargs="*", type=float,
                   help="densities of the nothing-pinned rows, each setting timed in a child "
                        "process (default: 0.1; --quick 0.2; the flag with no value skips them)")


def check_args(args) -> None:
    """Refuse bad values, and an --out that cannot hold the results, before any variant runs."""
    from .errors import ConfigError
    for flag in ("threads", "batches", "rounds", "steps"):
        values = getattr(args, flag)
        for v in ([] if values is None else values if isinstance(values, list) else [values]):
            if v < 1:
                raise ConfigError(f"--{flag} must be positive integers, got {v}")
    for flag in ("densities", "unpinned_densities"):
        for d in getattr(args, flag) or ():
            if not 0 < d <= 1:
                raise ConfigError(f"--{flag.replace('_', '-')} must lie in (0, 1], got {d}")
    out = out_folder(args)
    try:
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot be a folder for the results ({e.strerror or e})") from None


def out_folder(args):
    """Where the CSV and PNG go: --out; else benchmarks/, or nowhere for --quick."""
    from pathlib import Path
    return Path(args.out) if args.out else None if args.quick else Path("benchmarks")


def run_cli(args) -> int:
    check_args(args)
    quick = args.quick
    kw = dict(models=args.models,
              batches=args.batches or ((8,) if quick else BATCHES),
              densities=args.densities or ((0.2, 0.02) if quick else DENSITIES),
              threads=args.threads, with_torch=not args.no_torch,
              warmup=1 if quick else 5, rounds=args.rounds or (2 if quick else 6),
              steps=args.steps or (2 if quick else 5), part_steps=1 if quick else 5,
              unpinned_densities=(args.unpinned_densities if args.unpinned_densities is not None
                                  else (0.2,) if quick else UNPINNED_DENSITIES))
    t0 = time.perf_counter()
    result = run(**kw)
    rows = result["rows"]
    out = out_folder(args)
    written = ""
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        stem = "bench-quick" if quick else "bench"
        write_csv(rows, out / f"{stem}.csv")
        plot(rows, out / f"{stem}.png", threads=args.threads)
        written = f"; wrote {out / (stem + '.csv')} and {out / (stem + '.png')}"
    print()
    print(markdown_table(rows))
    print()
    print(parts_table(rows))
    if any(r["setting"] != "pinned" for r in rows):
        print()
        print(f"Library defaults (a process with nothing pinned; threads outside a step "
              f"{result['unpinned_threads']}) against {args.threads} pinned thread(s); "
              f"median ms (threads in the step):")
        print(defaults_table(rows))
    print()
    for line in targets(rows):
        print(line)
    print(f"\n{len(rows)} variants in {time.perf_counter() - t0:.0f} s{written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
