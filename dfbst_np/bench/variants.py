"""The things timed: a :class:`Variant` per (implementation, method, path, density).

A dfbst_np variant is a :class:`~dfbst_np.train.trainer.Trainer` step on a
model built by :func:`dfbst_np.models.build`; a torch variant is a
:class:`~dfbst_np.reference.ReferenceTrainer` step on the same weights and
thresholds. Every variant can restore its state (weights, thresholds,
optimiser, backward masks), so that every round of the timing starts alike.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

import numpy as np

from .. import methods, models as np_models
from ..sparse.ledger import LayerCost
from ..sparse.masked import masked_layers
from ..train.trainer import Trainer
from .common import INPUT_SHAPE, RECIPE, torch_module
from .parts import PartTimer, timed_implementation


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
    timer: Optional[PartTimer] = None   # an instrumented variant's (see dfbst_np.bench.parts)
    twin: Optional[Callable[[], "Variant"]] = None   # builds the instrumented copy
    setting: str = "pinned"       # or "library defaults" / "no thread limit" (UNPINNED)
    threads: Optional[int] = None  # BLAS (torch) threads inside the step when not the run's pin
    times: List[float] = field(default_factory=list)
    cpu_times: List[float] = field(default_factory=list)   # process CPU seconds per step


def _keep_per_row(fan_in: int, density: float) -> int:
    """Weights per row for a target density, at least 1.25 % of the row: SPEC's reset
    rule zeroes t (and M becomes all ones) as soon as a layer keeps <= 1 %, and the
    density drifts by a few weights per row during a round of steps."""
    return min(fan_in, max(int(round(density * fan_in)), int(np.ceil(0.0125 * fan_in)), 1))


def set_forward_density(model, density: float) -> None:
    """Thresholds t (positive) that keep the largest ``density`` of |W| in every row."""
    for _, layer in masked_layers(model):
        if "threshold" not in layer.params:
            continue
        a = np.sort(np.abs(layer.weight2d), axis=1)
        k = _keep_per_row(a.shape[1], density)
        # halfway between the last dropped and the first kept magnitude
        lo = a[:, a.shape[1] - k - 1] if k < a.shape[1] else np.zeros(a.shape[0], a.dtype)
        hi = a[:, a.shape[1] - k]
        layer.params["threshold"][...] = ((lo + hi) / 2).astype(layer.dtype) if k < a.shape[1] else 0


def set_backward_density(model, x, y, density: float) -> None:
    """u that keeps about ``density`` of |Ghat| per row, from this batch's gradient dW."""
    from ..nn.loss import CrossEntropyLoss
    model.train()
    model.zero_grad()
    loss = CrossEntropyLoss(dtype=x.dtype)
    loss.forward(model.forward(x), y)
    model.backward(loss.backward())
    for _, layer in masked_layers(model):
        if "dthreshold" not in layer.params:
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
        if not layer.impl.method.masked:
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
    bwd = sum(l.bdensity * l.weight.size for l in layers) / size
    return fwd, bwd


def numpy_variant(model_name, method, path, density, batch, data, weight_grad="exact",
                  name: Optional[str] = None, instrumented: bool = False, **trainer_kw) -> Variant:
    """A dfbst_np step of ``method`` on kernel ``path``; ``trainer_kw`` go to :class:`Trainer`
    (e.g. ``blas_threads``; ``textbook=True`` builds the model with the method's textbook
    implementation); ``name`` overrides the variant's name. ``instrumented``: the model's
    implementation object is wrapped so that its hooks report their time
    (:mod:`dfbst_np.bench.parts`); the variant's ``twin`` builds such a copy of it."""
    x, y = data
    textbook = trainer_kw.pop("textbook", False)
    impl = methods.implementation(method, "textbook" if textbook else "fast")
    timer = PartTimer()
    # the parts are timed on a twin built with this implementation wrapped
    impl = timed_implementation(impl, timer) if instrumented else impl
    model = np_models.build(model_name, method=impl, dtype=np.float32, kernel_path=None
                            if path == "-" else path, rng=np.random.default_rng(7),
                            weight_grad=weight_grad)
    rule = impl.method
    if rule.threshold_mask:
        set_forward_density(model, density)
    if rule.learns_backward_mask:
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
    args = (model_name, method, path, density, batch, data, weight_grad, name)
    kw = dict(trainer_kw, textbook=textbook)
    return Variant("dfbst_np", name, path, density if rule.masked else 1.0, step,
                   lambda: _np_restore(tr, snapshot),
                   flops=lambda: _np_flops(tr, weight_grad == "predicted"),
                   densities=lambda: _np_densities(tr), trainer=tr,
                   timer=timer if instrumented else None,
                   twin=lambda: numpy_variant(*args, instrumented=True, **kw))


def _np_snapshot(tr: Trainer):
    import copy
    layers = {name: layer.backward_mask for name, layer in tr.layers}
    return (tr.model.state_dict(), tr.optimizer.state_dict(), copy.deepcopy(tr.method_state), layers)


def _np_restore(tr: Trainer, snapshot) -> None:
    import copy
    state, optim, prev, layers = snapshot
    tr.model.load_state_dict(state)
    tr.optimizer.load_state_dict(optim)
    tr.method_state = copy.deepcopy(prev)    # the steps change it in place: keep the snapshot intact
    for name, layer in tr.layers:
        layer.set_backward_mask(layers[name])


def _dense_flops(np_dense: Variant) -> float:
    """Dense training FLOPs of the (already stepped) dfbst_np dense model, by the ledger."""
    return _np_flops(np_dense.trainer, predicted=False)


def _reference_variant(model_name, method, density, data, np_variant: Variant, np_dense: Variant,
                       name: str) -> Variant:
    """A step of :class:`~dfbst_np.reference.ReferenceTrainer` on the same weights and thresholds."""
    import copy
    from ..reference import ReferenceTrainer, build
    from ..reference.convert import to_torch_state_dict
    from ..reference.layers import masked_layers as ref_masked_layers
    torch = torch_module()
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


def batch_data(batch: int, seed: int = 0):
    """The timed batch: uniform images and random labels."""
    rng = np.random.default_rng(seed)
    return rng.random((batch,) + INPUT_SHAPE, dtype=np.float32), rng.integers(0, 10, batch)


def build_variants(model_name: str, batch: int, densities: Sequence[float], paths: Sequence[str],
                   with_torch: bool, seed: int = 0) -> List[Variant]:
    data = batch_data(batch, seed)
    np_dense = numpy_variant(model_name, "dense", "-", 1.0, batch, data)
    variants = [np_dense]
    if with_torch:
        variants.append(torch_dense_variant(model_name, data, np_dense))
    for d in densities:
        # (method, weight gradient, whether the PyTorch reference's step is timed beside it)
        for method, wg, reference in (("dst", "exact", False), ("dfbst", "exact", True),
                                      ("dfbst", "predicted", False)):
            for path in paths:
                variants.append(numpy_variant(model_name, method, path, d, batch, data, wg))
                if with_torch and reference and path == paths[0]:
                    variants.append(torch_reference_variant(model_name, d, data, variants[-1], np_dense))
        variants.append(numpy_variant(model_name, "dfbst", "-", d, batch, data,
                                      name="dfbst-textbook", textbook=True))
    return variants
