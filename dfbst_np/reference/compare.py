"""Side-by-side comparison of a dfbst_np model (or trainer) with the reference.

The NumPy side is used only through its public interface (SPEC section 3):
``params``, ``grads``, ``state_dict()``, ``load_state_dict()``,
``forward(x)``, ``backward(dlogits)``, ``train()``, ``zero_grad()``,
``named_modules()`` and, on masked layers, the attributes ``mask`` (M) and
``dmask`` (D), all keyed by the same dotted names as the torch state dict.

Errors are reported per array as max |a - b| and max |a - b| / max |b|,
where b is the reference (torch) value.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Iterable, List, NamedTuple, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import models as np_models
from .convert import to_numpy_state_dict
from .trainer import as_inputs

KINDS = ("output", "grad", "param", "buffer", "mask")
_STAT_KEYS = ("loss", "ce", "alpha_term", "beta_term", "V", "grad_norm")


class Row(NamedTuple):
    """One compared quantity: ``max_rel = max_abs / max |reference|``.

    Both errors are ``inf`` when the quantity exists on one side only or the
    shapes differ.
    """

    name: str
    kind: str
    max_abs: float
    max_rel: float


def _errors(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return math.inf, math.inf
    both_nan = np.isnan(a) & np.isnan(b)
    diff = np.where(both_nan, 0.0, np.abs(a - b))
    max_abs = float(diff.max(initial=0.0))
    if np.isnan(max_abs):
        return math.inf, math.inf
    scale = float(np.abs(np.where(both_nan, 0.0, b)).max(initial=0.0))
    return max_abs, (max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf))


def _row(name: str, kind: str, a, b) -> Row:
    if a is None or b is None:
        return Row(name, kind, math.inf, math.inf)
    if isinstance(b, torch.Tensor):
        b = b.detach().cpu().numpy()
    return Row(name, kind, *_errors(a, b))


def _torch_param_grads(model: nn.Module):
    return {k: (p.grad.detach().cpu().numpy() if p.grad is not None else None)
            for k, p in model.named_parameters()}


def _compare_dicts(np_side: dict, torch_side: dict, kind: str, prefix: str = "") -> List[Row]:
    """Rows for every name present on either side; absent on both is skipped."""
    rows = []
    for name in list(torch_side) + [k for k in np_side if k not in torch_side]:
        a, b = np_side.get(name), torch_side.get(name)
        if a is None and b is None:
            continue
        rows.append(_row(prefix + name, kind, a, b))
    return rows


def _named_np_modules(np_model) -> dict:
    walk = getattr(np_model, "named_modules", None)
    return dict(walk()) if walk is not None else {}


def _compare_masks(np_model, torch_model: nn.Module, prefix: str = "") -> List[Row]:
    """M and D of every masked layer, matched by module name."""
    np_mods = _named_np_modules(np_model)
    rows = []
    for name, tm in torch_model.named_modules():
        for attr in ("mask", "dmask"):
            tval = getattr(tm, attr, None)
            if not isinstance(tval, torch.Tensor):
                continue
            nval = getattr(np_mods.get(name), attr, None)
            rows.append(_row(f"{prefix}{name}.{attr}" if name else prefix + attr, "mask", nval, tval))
    return rows


def _state_rows(np_model, torch_model: nn.Module, prefix: str = "") -> List[Row]:
    """Parameters and buffers by state-dict name."""
    t_sd = to_numpy_state_dict(torch_model.state_dict())
    n_sd = np_model.state_dict()
    param_names = {k for k, _ in torch_model.named_parameters()}
    rows = []
    for name in list(t_sd) + [k for k in n_sd if k not in t_sd]:
        kind = "param" if name in param_names else "buffer"
        rows.append(_row(prefix + name, kind, n_sd.get(name), t_sd.get(name)))
    return rows


def copy_state(np_model, torch_model: nn.Module) -> None:
    """Load the torch model's parameters and buffers into the NumPy model."""
    np_model.load_state_dict(to_numpy_state_dict(torch_model.state_dict()))


def compare(np_model, torch_model: nn.Module, batches, np_trainer=None, ref_trainer=None,
            copy: bool = True, train: bool = True, every_step: bool = False,
            loss=None) -> List[Row]:
    """Compare dfbst_np with the reference on one batch or on training steps.

    Parameters
    ----------
    np_model
        dfbst_np model (see module docstring for the interface used).
    torch_model : torch.nn.Module
        Reference model of the same architecture and dtype.
    batches
        Single-batch mode (no trainers): one ``(x, y)`` pair of NumPy arrays.
        Both models run one forward and one backward of the mean
        cross-entropy only (no alpha or beta terms, no backward mask), using
        ``dfbst_np.nn.loss.CrossEntropyLoss`` on the NumPy side.
        Training mode (both trainers given): a sequence of
        ``(x, y, epoch, index)``; when ``epoch`` increases, ``end_epoch()`` is
        called on both trainers once per epoch passed.
    np_trainer, ref_trainer
        ``dfbst_np.Trainer`` and :class:`~dfbst_np.reference.trainer.ReferenceTrainer`
        built on the two models; give both or neither.
    copy : bool
        First copy the torch model's state into the NumPy model, so both start
        from the same numbers.
    train : bool
        Single-batch mode: compare in training mode (BatchNorm batch
        statistics, running-stat updates) or evaluation mode.
    every_step : bool
        Training mode: also compare all parameters, buffers and masks after
        every step (names prefixed ``step<k>.``), not only after the last.
    loss : object, optional
        Single-batch mode: the NumPy loss, with ``forward(logits, labels) ->
        float`` and ``backward() -> dlogits``; default
        ``dfbst_np.nn.loss.CrossEntropyLoss`` in the logits' dtype (mean
        cross-entropy).

    Returns
    -------
    list of Row
        Single batch: ``output`` rows for ``logits`` and ``loss``; ``grad``
        rows for every parameter (``inf`` where one side has a gradient and
        the other has none); ``buffer`` rows (after the forward); ``mask``
        rows for M. Training: ``output`` rows ``step<k>.<stat>`` for the step
        statistics both trainers report; ``param``/``buffer``/``mask`` rows
        (M and D) after the last step.
    """
    if (np_trainer is None) != (ref_trainer is None):
        raise ValueError("compare: give both trainers (training steps) or neither (one batch)")
    if copy:
        copy_state(np_model, torch_model)
    if np_trainer is None:
        return _compare_batch(np_model, torch_model, batches, train, loss)
    return _compare_training(np_model, torch_model, batches, np_trainer, ref_trainer, every_step)


def _compare_batch(np_model, torch_model: nn.Module, batch, train: bool, loss_fn) -> List[Row]:
    x, y = batch
    np_model.train(train)
    torch_model.train(train)

    xt, yt = as_inputs(torch_model, x, y)
    logits_t = torch_model(xt)
    loss_t = F.cross_entropy(logits_t, yt)
    torch_model.zero_grad(set_to_none=True)
    loss_t.backward()

    np_model.zero_grad()
    logits_n = np_model.forward(x)
    if loss_fn is None:
        loss_fn = _numpy_cross_entropy(logits_n.dtype)
    loss_n = loss_fn.forward(logits_n, y)
    np_model.backward(loss_fn.backward())

    rows = [_row("logits", "output", logits_n, logits_t),
            _row("loss", "output", loss_n, loss_t)]
    rows += _compare_dicts(dict(np_model.grads), _torch_param_grads(torch_model), "grad")
    rows += [r for r in _state_rows(np_model, torch_model) if r.kind == "buffer"]
    rows += [r for r in _compare_masks(np_model, torch_model) if r.name.endswith(".mask")]
    return rows


def _numpy_cross_entropy(dtype):
    """The NumPy side's own mean cross-entropy, accepting logits of ``dtype``."""
    from dfbst_np.nn.loss import CrossEntropyLoss
    try:
        return CrossEntropyLoss(dtype=dtype)
    except TypeError:  # a loss without a dtype argument
        return CrossEntropyLoss()


def _stats_dict(stats) -> dict:
    """A trainer's step statistics as a dict (mapping, dataclass or plain object)."""
    if isinstance(stats, Mapping):
        return dict(stats)
    if dataclasses.is_dataclass(stats):
        return {f.name: getattr(stats, f.name) for f in dataclasses.fields(stats)}
    return dict(vars(stats))


def _compare_training(np_model, torch_model, batches: Iterable[Sequence[Any]], np_trainer,
                      ref_trainer, every_step: bool) -> List[Row]:
    rows: List[Row] = []
    last_epoch: Optional[int] = None
    for k, (x, y, epoch, index) in enumerate(batches):
        if last_epoch is not None:
            for _ in range(epoch - last_epoch):
                np_trainer.end_epoch()
                ref_trainer.end_epoch()
        last_epoch = epoch
        s_np = _stats_dict(np_trainer.step(x, y, epoch=epoch, index=index))
        s_ref = _stats_dict(ref_trainer.step(x, y, epoch=epoch, index=index))
        for key in _STAT_KEYS:
            if key in s_np and key in s_ref:
                # None is how a trainer may say "no V this step"; the reference says nan.
                a, b = (math.nan if s[key] is None else float(s[key]) for s in (s_np, s_ref))
                if math.isnan(a) and math.isnan(b):
                    continue
                rows.append(_row(f"step{k}.{key}", "output", a, b))
        if every_step:
            rows += _state_rows(np_model, torch_model, prefix=f"step{k}.")
            rows += _compare_masks(np_model, torch_model, prefix=f"step{k}.")
    if not every_step:
        rows += _state_rows(np_model, torch_model)
        rows += _compare_masks(np_model, torch_model)
    return rows


def max_rel_err(rows: Iterable[Row], kinds: Optional[Iterable[str]] = None) -> float:
    """Largest ``max_rel`` over ``rows`` (restricted to ``kinds`` if given); 0.0 if none."""
    kinds = None if kinds is None else set(kinds)
    vals = [r.max_rel for r in rows if kinds is None or r.kind in kinds]
    return max(vals, default=0.0)


def format_table(rows: Iterable[Row]) -> str:
    """A plain-text table of ``rows`` in their order: name, kind, max abs err, max rel err."""
    rows = list(rows)
    width = max([len(r.name) for r in rows] + [4])
    lines = [f"{'name':<{width}}  {'kind':<6}  {'max abs err':>11}  {'max rel err':>11}",
             "-" * (width + 36)]
    for r in rows:
        lines.append(f"{r.name:<{width}}  {r.kind:<6}  {r.max_abs:>11.3e}  {r.max_rel:>11.3e}")
    return "\n".join(lines)


#: Input shape (C, H, W) of each model for :func:`check_model`.
INPUT_SHAPES = np_models.INPUT_SHAPES

#: Gradients that are mathematically zero (a linear bias followed by
#: BatchNorm1d: the normalisation removes any constant shift), judged by
#: absolute error because their relative error is rounding noise over zero.
ZERO_GRADIENTS = {"vgg16": {"classifier.0.bias"}}
ZERO_GRADIENT_ABS_TOL = 1e-13


def row_ok(row: Row, tol: float, zero_gradients=()) -> bool:
    """Whether one row of :func:`compare` is within tolerance.

    Masks must be identical; a gradient named in ``zero_gradients`` must have
    an absolute error below :data:`ZERO_GRADIENT_ABS_TOL`; everything else a
    relative error of at most ``tol``.
    """
    if row.kind == "mask":
        return row.max_abs == 0
    if row.kind == "grad" and row.name in zero_gradients:
        return row.max_abs < ZERO_GRADIENT_ABS_TOL
    return row.max_rel <= tol


def check_model(model: str, method: str, batch_size: int = 4, seed: int = 0, tol: float = 1e-10,
                float32_masks: bool = False, printer=print) -> bool:
    """Compare one forward and backward of a dfbst_np model with the reference.

    Builds the reference model (float64, ``torch.manual_seed(seed)``) and the
    dfbst_np model with the same architecture, copies the reference's state
    into it through the state dict, draws one batch of ``batch_size`` normal
    images of the model's input shape and random labels (NumPy generator
    seeded with ``seed``), runs :func:`compare` on it in training mode, and
    prints the table of errors and a one-line verdict.

    Parameters
    ----------
    model : {"lenet300_100", "lenet_5", "vgg16", "resnet18"}
    method : {"dense", "dst", "dfbst"}
    batch_size, seed : int
    tol : float
        Largest relative error accepted for outputs, gradients and buffers.
        Masks must be identical. Mathematically zero gradients
        (:data:`ZERO_GRADIENTS`) are judged by absolute error instead.
    float32_masks : bool
        Build both sides with the reference's float32 masks.
    printer : callable
        Receives the table and the verdict (default :func:`print`).

    Returns
    -------
    bool
        True when every compared quantity is within tolerance.
    """
    from dfbst_np import models as np_models
    from .models import build

    if model not in INPUT_SHAPES:
        raise ValueError(f"check_model: unknown model {model!r}; expected one of {sorted(INPUT_SHAPES)}")
    if batch_size < 1:
        raise ValueError(f"check_model: batch_size must be >= 1, got {batch_size}")
    torch.manual_seed(seed)
    ref = build(model, method=method, dtype=torch.float64, float32_masks=float32_masks)
    np_model = np_models.build(model, method=method, dtype=np.float64, float32_masks=float32_masks)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch_size,) + INPUT_SHAPES[model])
    y = rng.integers(0, 10, batch_size)
    rows = compare(np_model, ref, (x, y), copy=True, train=True)
    zero = ZERO_GRADIENTS.get(model, set())
    bad = [r for r in rows if not row_ok(r, tol, zero)]
    printer(format_table(rows))
    judged = [r for r in rows if r.kind != "mask" and r.name not in zero]
    worst = max_rel_err(judged)
    masks = sum(r.kind == "mask" for r in rows)
    what = (f"check-grads {model}/{method} (float64, batch {batch_size}, seed {seed}): "
            f"{len(rows)} quantities, {masks} masks, max rel err {worst:.3e}, tol {tol:.0e}")
    if bad:
        printer(f"MISMATCH: {what}; {len(bad)} outside tolerance: "
                + ", ".join(r.name for r in bad))
    else:
        printer(f"OK: {what}")
    return not bad
