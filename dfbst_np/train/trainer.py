r"""The reference training step of DFBST (SPEC section 1, "Objective and optimiser").

One call of :meth:`Trainer.step` does, in this order:

1. forward, cross-entropy, and the hand-written backward of every layer
   (each masked layer applies its method's gradient rule for dW and dt);
2. the method's loss term on its parameters (DST, DFBST: the threshold
   penalty :math:`\alpha \sum_i e^{-t_i}`);
3. the method's term carried from the previous step (DFBST:
   :math:`\beta V_{prev}` from the second epoch on and never at batch index 0;
   on other steps u has *no* gradient, so SGD leaves it untouched);
4. the method's gradient mask (DFBST: D on each dW, and this step's V and
   :math:`\partial V / \partial u`, kept for the next step);
5. clipping of the total gradient norm, then SGD with momentum and weight decay;
6. the method's topology update, if it has one at this step.

This is the only place that knows that order; *what* each step does is the
method's, through the hooks of the implementation object the trainer shares
with the model's layers (:mod:`dfbst_np.methods`, docs/SPEC.md "Method
hooks"). Layers never see the optimiser, and the optimiser never sees a mask.

Speed without changing the numbers: the layer that reads the network's input
skips its backward-data product for the step (nothing needs dL/dx there);
the gradient norm is computed once (one dot product per gradient) and serves
both the finiteness check and the clipping (SGD is told not to scan for NaN
again); each step runs with one BLAS thread unless the process was pinned
(:func:`dfbst_np.runtime.step_threads`: scoped, restored after the step;
the LeNets' products are too small to share between threads); step
statistics use the counts the masks already made. With a gradient on a
support (DFBST's predicted mode, see :mod:`dfbst_np.methods.fast`) this
trainer takes the norm and clips on the support's values, and writes the
used gradient into the dense one once.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

import numpy as np

from .. import methods
from ..methods import StepInfo
from ..nn.clip import clip_grad_norm
from ..nn.containers import Sequential
from ..nn.loss import CrossEntropyLoss
from ..nn.optim import SGD, MultiStepLR
from ..nn.shape import Flatten
from ..runtime import step_threads
from ..sparse.ledger import CostTotals, total_cost
from ..sparse.masked import MaskedLayer, masked_layers


@dataclass
class StepStats:
    """What one training step reports.

    loss = ce + alpha_term + beta_term. V is this step's statistic (None for
    dense and dst). density / bdensity: forward (M) and backward (D) density
    per masked layer. cost: the cost ledger's totals for this step.
    """
    loss: float
    ce: float
    alpha_term: float
    beta_term: float
    V: Optional[float]
    grad_norm: float
    accuracy: float
    density: Dict[str, float] = field(default_factory=dict)
    bdensity: Dict[str, float] = field(default_factory=dict)
    cost: Optional[CostTotals] = None


class Trainer:
    """The reference trainer of a model's method (``dense``, ``dst``, ``dfbst``, ...).

    Parameters
    ----------
    model : a model from ``dfbst_np.models.build``, or any model of masked
        layers that share one implementation object and one Settings.
    lr, momentum, weight_decay : SGD's; weight decay applies to every parameter
        with a gradient, thresholds included.
    alpha : weight of the threshold penalty (dst and dfbst).
    beta : weight of V_prev in the loss (dfbst).
    clip_norm : max total gradient norm, or None for no clipping.
    milestones, gamma : the multi-step learning-rate schedule, per epoch.
    weight_grad : "exact", "predicted" or None
        Must be the model's setting if given (it is chosen when the model is
        built, ``models.build(..., weight_grad=...)``); None: the model's.
    blas_threads : int or None
        BLAS threads during a step (scoped: restored after it). None: the
        count the process was pinned to (CLI ``--threads``), else 1.
    textbook : bool or None
        Whether the model's layers run the textbook implementation (plain
        NumPy through :mod:`dfbst_np.textbook`, dense products; slower, the
        same numbers): the model is built so (``models.build(...,
        textbook=True)``) and this trainer then runs its own hooks (penalty,
        beta term, backward mask) through the same implementation. None: as the
        model is; True or False must match the model.
    steps_per_epoch, epochs : the run's shape, if known: a method's schedule
        (``StepInfo.step`` and ``total``) counts from them.
    """

    def __init__(self, model, lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 1e-4,
                 alpha: float = 5e-6, beta: float = 0.1, clip_norm: Optional[float] = 1.0,
                 milestones=(80, 120), gamma: float = 0.1, weight_grad: Optional[str] = None,
                 blas_threads: Optional[int] = None, textbook: Optional[bool] = None,
                 steps_per_epoch: Optional[int] = None, epochs: Optional[int] = None) -> None:
        self.model = model
        self.layers = masked_layers(model)
        self.impl = _model_implementation(self.layers, textbook)
        self.method = self.impl.method.name
        self.textbook = self.impl.kind == "textbook"
        self.settings = _model_settings(self.layers)
        if weight_grad is not None and weight_grad != self.settings.weight_grad:
            raise ValueError(f"Trainer: weight_grad={weight_grad!r}, but the model was built with "
                             f"weight_grad={self.settings.weight_grad!r}; choose it in "
                             f"models.build(..., weight_grad=...)")
        # The masked layers that read the network's input: nobody needs their dL/dx.
        self._input_ids = set(map(id, _input_layers(model)))
        self.blas_threads = blas_threads
        self.alpha, self.beta, self.clip_norm = alpha, beta, clip_norm
        self.steps_per_epoch, self.epochs = steps_per_epoch, epochs
        self.steps_taken = 0
        self.loss_fn = CrossEntropyLoss(dtype=model_dtype(model))
        self.optimizer = SGD(model.params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.scheduler = MultiStepLR(self.optimizer, milestones=milestones, gamma=gamma)
        self.impl.setup(self.layers)
        self.method_state = self.impl.new_run_state()

    def step_info(self, epoch: int, index: int) -> StepInfo:
        """Where the step (epoch, index) is in the run, for the method's schedule."""
        spe = self.steps_per_epoch
        step = (epoch - 1) * spe + index if spe else self.steps_taken
        total = spe * self.epochs if spe and self.epochs else None
        return StepInfo(epoch=epoch, index=index, step=step, total=total)

    def step(self, x: np.ndarray, y: np.ndarray, epoch: int, index: int,
             trace: Optional[Callable[[str, Dict[str, np.ndarray]], None]] = None) -> StepStats:
        """One reference training step on the batch (x, y); epoch counts from 1.

        ``trace``, if given, is called with copies of what each stage produced,
        in the order of the step (the verifier compares them stage by stage):

        * ``"forward"``: ``logits``, ``ce``, ``loss`` (CE plus the alpha and beta terms);
        * ``"grad"``: every parameter's gradient as autograd gives it for that
          loss, before the backward mask and clipping (u only on steps with
          the beta term; in predicted mode dW is 0 off the support);
        * ``"mask"``: ``NAME.mask`` (M) and, for dfbst, ``NAME.dmask`` (D);
        * ``"used_grad"``: the gradients the optimiser applies (after D and clipping);
        * ``"update"``: every parameter after the update, and
          ``NAME.momentum_buffer`` for those with a momentum buffer.
        """
        with step_threads(self.blas_threads):
            return self._step(x, y, epoch, index, trace)

    def _step(self, x, y, epoch, index, trace) -> StepStats:
        """SPEC's five steps, one call each (see the module docstring)."""
        info = self.step_info(epoch, index)
        logits, ce = self._forward_backward(x, y, self.impl.step_weight_grad(self, info))
        alpha_term = self.impl.alpha_term(self)
        beta_term = self.impl.beta_term(self, info)
        if trace is not None:
            trace("forward", {"logits": logits.copy(), "ce": np.array(ce),
                              "loss": np.array(ce + alpha_term + beta_term)})
            trace("grad", self._grads_for_trace())
        used = self.impl.gradient_mask(self)
        if used is None:      # the loss gradients are used as they are (on a support, maybe)
            used = {f"{name}.weight": layer.loss_grad() for name, layer in self.layers}
        if trace is not None:
            trace("mask", self._masks_for_trace())
        grad_norm = self._clip_and_update(used, trace)
        self.impl.after_update(self, info)
        self.steps_taken += 1
        return StepStats(
            loss=ce + alpha_term + beta_term, ce=ce, alpha_term=alpha_term, beta_term=beta_term,
            V=self.impl.statistic(self), grad_norm=grad_norm,
            accuracy=float((logits.argmax(axis=1) == y).mean()),
            density={name: layer.density for name, layer in self.layers},
            bdensity={name: layer.bdensity for name, layer in self.layers},
            cost=self.step_cost())

    # -- 1. forward, loss, backward ------------------------------------------
    def _forward_backward(self, x, y, weight_grad):
        """Logits and CE of the batch; every layer's gradients (dW before D)."""
        model = self.model
        model.train()
        model.zero_grad()
        for _, layer in self.layers:              # the trainer writes the used dW itself
            layer.next_step(input_grad=id(layer) not in self._input_ids, weight_grad=weight_grad,
                            deferred=True)
        logits = model.forward(x)
        ce = self.loss_fn.forward(logits, y)
        model.backward(self.loss_fn.backward())
        return logits, ce

    # -- 5. clipping and SGD --------------------------------------------------
    def _clip_and_update(self, used, trace) -> float:
        """Clip the total gradient norm, hand each layer its used weight gradient,
        and take the SGD step. Returns the norm before clipping."""
        grads = self.model.grads
        view = self._clip_view(grads, used)
        grad_norm, norms = self._checked_norm(view)
        if self.clip_norm is not None:
            clip_grad_norm(view, self.clip_norm, sq_norms=norms)
        for name, layer in self.layers:
            layer.set_used_grad(used[f"{name}.weight"])
        grads = self.model.grads
        if trace is not None:
            trace("used_grad", {name: np.array(g) for name, g in grads.items()})
        # The norm above is finite, so every gradient is, also after clipping.
        self.optimizer.step(grads, check_finite=False)
        if trace is not None:
            trace("update", self._update_for_trace())
        return grad_norm

    def _clip_view(self, grads: Dict[str, np.ndarray], used) -> Dict[str, np.ndarray]:
        """The gradients in parameter order, a masked weight gradient as its values
        (for a predicted one, its support's values: the norm and the clipping need
        only those, dW * D being 0 elsewhere, and the dense gradient is written
        once, already clipped)."""
        return {name: used[name].values if name in used else grads[name]
                for name in self.optimizer.params if name in used or name in grads}

    @staticmethod
    def _checked_norm(grads: Dict[str, np.ndarray]):
        """Total L2 norm of all gradients and the per-gradient squared norms (float64).

        Each squared norm is one dot product in the gradient's dtype; a float32
        one that overflows (|g| beyond ~1.8e19) is taken again in float64, so a
        large but finite gradient is clipped rather than reported. A NaN or inf
        raises FloatingPointError naming the first such gradient.
        """
        sq = []
        for name, g in grads.items():
            flat = g.reshape(-1)
            value = float(np.dot(flat, flat))
            if not np.isfinite(value) and flat.dtype != np.float64:
                flat = flat.astype(np.float64)
                value = float(np.dot(flat, flat))
            if not np.isfinite(value):
                raise FloatingPointError(f"Trainer: the gradient of {name!r} contains NaN or inf")
            sq.append(value)
        return float(np.sqrt(sum(sq))), sq

    # -- the trace --------------------------------------------------------------
    def _grads_for_trace(self) -> Dict[str, np.ndarray]:
        grads = {name: np.array(g) for name, g in self.model.grads.items()}
        for name, layer in self.layers:
            grads[f"{name}.weight"] = np.array(layer.loss_grad().dense()).reshape(layer.weight.shape)
        return {name: grads[name] for name in self.optimizer.params if name in grads}

    def _masks_for_trace(self) -> Dict[str, np.ndarray]:
        out = {}
        for name, layer in self.layers:
            if layer.mask is not None:
                out[f"{name}.mask"] = np.array(layer.mask)
            if layer.dmask is not None:
                out[f"{name}.dmask"] = np.array(layer.dmask)
        return out

    def _update_for_trace(self) -> Dict[str, np.ndarray]:
        out = {name: np.array(p) for name, p in self.model.params.items()}
        for key, value in self.optimizer.state_dict().items():
            if key.startswith("momentum_buffer."):
                out[key[len("momentum_buffer."):] + ".momentum_buffer"] = value
        return out

    def step_cost(self) -> CostTotals:
        """Training FLOPs of the last step, exact and ideal (SPEC "Cost accounting"),
        as the method counts what it paid."""
        return total_cost([self.impl.layer_cost(name, layer) for name, layer in self.layers])

    def state_dict(self) -> Dict[str, np.ndarray]:
        """The method's state a checkpoint holds besides the model and the optimiser."""
        return self.impl.state_dict(self)

    def load_state_dict(self, arrays: Dict[str, np.ndarray]) -> None:
        self.impl.load_state_dict(self, arrays)

    def end_epoch(self) -> None:
        """The method's end-of-epoch hook, then the learning-rate schedule (call once
        at the end of every epoch)."""
        self.impl.end_epoch(self, self.scheduler.last_epoch + 1)
        self.scheduler.step()

    @property
    def lr(self) -> float:
        return self.optimizer.lr


def _model_implementation(layers, textbook):
    """The one implementation object the model's masked layers share (a model of
    plain layers trains as ``dense``)."""
    impls = {id(layer.impl): layer.impl for _, layer in layers}
    if len(impls) > 1:
        raise ValueError(f"Trainer: the model's layers use different implementations "
                         f"{sorted(map(repr, impls.values()))}; use one")
    impl = impls.popitem()[1] if impls else methods.implementation(
        "dense", "textbook" if textbook else "fast")
    if textbook is not None and bool(textbook) != (impl.kind == "textbook"):
        raise ValueError(f"Trainer: textbook={bool(textbook)}, but the model's layers run the "
                         f"{impl.kind} implementation; build the model with "
                         f"models.build(..., textbook={bool(textbook)})")
    return impl


def _model_settings(layers) -> methods.Settings:
    """The model-wide Settings every masked layer holds; a layer whose settings
    differ from the first layer's is a ValueError naming it and the setting."""
    if not layers:
        return methods.Settings()
    first, settings = layers[0][0], layers[0][1].settings
    for name, layer in layers[1:]:
        if layer.settings == settings:
            continue
        for f in dataclasses.fields(settings):
            mine, theirs = getattr(layer.settings, f.name), getattr(settings, f.name)
            if mine != theirs:
                raise ValueError(f"Trainer: layer {name!r} has {f.name}={mine!r}, but layer "
                                 f"{first!r} has {f.name}={theirs!r}; the settings are model-wide: "
                                 f"build the model with one Settings (models.build(...))")
    return settings


def _input_layers(model):
    """Masked layers that read the network's input directly (their dL/dx is never used).

    Walks the model's forward order (``order`` of a Chain, else children in
    registration order) past pure reshapes (Flatten) to the first layer; that
    layer is returned if it is masked. Anything else first: none.
    """
    module = model
    while True:
        if isinstance(module, MaskedLayer):
            return [module]
        names = getattr(module, "order", None)
        children = ([getattr(module, n) for n in names] if names is not None
                    else [c for _, c in module.named_children()])
        children = [c for c in children if not isinstance(c, Flatten)]
        if not children:
            return []
        module = children[0]
        if not (isinstance(module, MaskedLayer) or getattr(module, "order", None) is not None
                or isinstance(module, Sequential)):
            return []


def model_dtype(model) -> np.dtype:
    """The dtype of a model's parameters (all of them share it)."""
    return next(iter(model.params.values())).dtype


def evaluate(model, images: np.ndarray, labels: np.ndarray, batch_size: int = 100):
    """Accuracy and mean cross-entropy of ``model`` in eval mode, batch by batch."""
    if len(images) == 0:
        raise ValueError("evaluate: no images to evaluate (N = 0)")
    model.eval()
    loss_fn = CrossEntropyLoss(dtype=model_dtype(model))
    correct, loss_sum = 0, 0.0
    for start in range(0, len(images), batch_size):
        x, y = images[start:start + batch_size], labels[start:start + batch_size]
        logits = model.forward(x)
        loss_sum += loss_fn.forward(logits, y) * len(y)
        correct += int((logits.argmax(axis=1) == y).sum())
    model.train()
    return correct / len(images), loss_sum / len(images)
