r"""The reference training step of DFBST (SPEC section 1, "Objective and optimiser").

One call of :meth:`Trainer.step` does, in this order:

1. forward, cross-entropy, and the hand-written backward of every layer
   (each masked layer applies its own gradient rule for dW and dt);
2. the threshold penalty :math:`\alpha \sum_i e^{-t_i}` on every forward threshold;
3. for dfbst, the term :math:`\beta V_{prev}` from the second epoch on and
   never at batch index 0: u gets :math:`\beta\, \partial V_{prev} / \partial u`,
   computed with the previous step's values; on other steps u has *no*
   gradient, so SGD leaves it (and its momentum) untouched;
4. for dfbst, the backward mask D on each dW, and this step's V and
   :math:`\partial V / \partial u`, kept for the next step;
5. clipping of the total gradient norm, then SGD with momentum and weight decay.

This is the only place that knows that order. Layers never see the
optimiser, and the optimiser never sees a mask.

Speed without changing the numbers: the layer that reads the network's input
skips its backward-data product for the step (nothing needs dL/dx there);
the gradient norm is computed once (one dot product per gradient) and serves
both the finiteness check and the clipping (SGD is told not to scan for NaN
again); each step runs with one BLAS thread unless the process was pinned
(:func:`dfbst_np.runtime.step_threads`: scoped, restored after the step;
the LeNets' products are too small to share between threads); step
statistics use the counts the masks already made. With ``weight_grad="predicted"`` (DFBST's accelerated
approximation, see :mod:`dfbst_np.sparse.masked`) the layers compute dW only
on their predicted support and this trainer applies D there, takes the
norm and clips on the support's values, and writes dW * D into the dense
gradient once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

import numpy as np

from .. import textbook as tb
from ..nn.clip import clip_grad_norm
from ..nn.containers import Sequential
from ..nn.loss import CrossEntropyLoss
from ..nn.optim import SGD, MultiStepLR
from ..nn.shape import Flatten
from ..runtime import step_threads
from ..sparse.backward_mask import BackwardMask, backward_mask
from ..sparse.entries import Entries, Pattern
from ..sparse.ledger import CostTotals, LayerCost, total_cost
from ..sparse.mask_rule import threshold_penalty
from ..sparse.masked import WEIGHT_GRADS, MaskedLayer, masked_layers
from ..sparse.step import long_tailed


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
    """The reference trainer for ``dense``, ``dst`` and ``dfbst`` models.

    Parameters
    ----------
    model : a model from ``dfbst_np.models.build``.
    lr, momentum, weight_decay : SGD's; weight decay applies to every parameter
        with a gradient, thresholds included.
    alpha : weight of the threshold penalty (dst and dfbst).
    beta : weight of V_prev in the loss (dfbst).
    clip_norm : max total gradient norm, or None for no clipping.
    milestones, gamma : the multi-step learning-rate schedule, per epoch.
    weight_grad : "exact", "predicted" or None
        Set every masked layer's weight gradient mode (None keeps the model's).
        "predicted" is DFBST's accelerated approximation (dfbst only).
    blas_threads : int or None
        BLAS threads during a step (scoped: restored after it). None: the
        count the process was pinned to (CLI ``--threads``), else 1.
    textbook : bool
        Run the whole rule through :mod:`dfbst_np.textbook` with dense
        products: the masked layers' forward mask and gradient rule, the
        backward mask with V and dV/du, the beta term and the penalty
        (clipping and SGD are :mod:`dfbst_np.nn`'s either way). Slower, and
        the same numbers as the default (fast) trainer.
    """

    def __init__(self, model, lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 1e-4,
                 alpha: float = 5e-6, beta: float = 0.1, clip_norm: Optional[float] = 1.0,
                 milestones=(80, 120), gamma: float = 0.1, weight_grad: Optional[str] = None,
                 blas_threads: Optional[int] = None, textbook: bool = False) -> None:
        self.model = model
        self.layers = masked_layers(model)
        methods = {layer.method for _, layer in self.layers}
        if len(methods) > 1:
            raise ValueError(f"Trainer: the model mixes methods {sorted(methods)}; use one")
        self.method = methods.pop() if methods else "dense"
        if weight_grad is not None:
            if weight_grad not in WEIGHT_GRADS:
                raise ValueError(f"Trainer: unknown weight_grad {weight_grad!r}; "
                                 f"expected one of {WEIGHT_GRADS}")
            if weight_grad == "predicted" and self.method != "dfbst":
                raise ValueError(f"Trainer: weight_grad='predicted' needs method 'dfbst', "
                                 f"the model's is {self.method!r}")
            for _, layer in self.layers:
                layer.weight_grad = weight_grad
        self.textbook = bool(textbook)
        self._set_textbook()
        self.input_layers = _input_layers(model)
        self.blas_threads = blas_threads
        self.alpha, self.beta, self.clip_norm = alpha, beta, clip_norm
        self.loss_fn = CrossEntropyLoss(dtype=model_dtype(model))
        self.optimizer = SGD(model.params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.scheduler = MultiStepLR(self.optimizer, milestones=milestones, gamma=gamma)
        self.prev = None    # the previous step's BackwardMask: V and d(beta V)/du

    def _set_textbook(self) -> None:
        """Switch every masked layer to the textbook rule (or back), and pick this
        trainer's penalty and backward mask functions to match."""
        for name, layer in self.layers:
            if self.textbook and layer.weight_grad == "predicted":
                raise ValueError(f"Trainer: textbook=True runs the exact rule; layer {name!r} "
                                 f"has weight_grad='predicted', which has no textbook form")
            if self.textbook and layer.estimator is not long_tailed:
                raise ValueError(f"Trainer: textbook=True knows only the long-tailed estimator; "
                                 f"layer {name!r} uses {layer.estimator.__name__!r}")
            layer.textbook = self.textbook
        self._penalty_rule = tb.threshold_penalty if self.textbook else threshold_penalty
        self._mask_rule = _textbook_backward_mask if self.textbook else backward_mask

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
        logits, ce = self._forward_backward(x, y)
        alpha_term = self._add_penalty()
        beta_term = self._add_beta_term(epoch, index)
        if trace is not None:
            trace("forward", {"logits": logits.copy(), "ce": np.array(ce),
                              "loss": np.array(ce + alpha_term + beta_term)})
            trace("grad", self._grads_for_trace())
        used = self._apply_backward_mask()
        if trace is not None:
            trace("mask", self._masks_for_trace())
        grad_norm = self._clip_and_update(used, trace)
        return StepStats(
            loss=ce + alpha_term + beta_term, ce=ce, alpha_term=alpha_term, beta_term=beta_term,
            V=self.prev.V if self.method == "dfbst" else None, grad_norm=grad_norm,
            accuracy=float((logits.argmax(axis=1) == y).mean()),
            density={name: layer.density for name, layer in self.layers},
            bdensity={name: (1.0 if layer.dmask_nnz is None else layer.dmask_nnz / layer.weight.size)
                      for name, layer in self.layers},
            cost=self.step_cost())

    # -- 1. forward, loss, backward ------------------------------------------
    def _forward_backward(self, x, y):
        """Logits and CE of the batch; every layer's gradients (dW before D)."""
        model = self.model
        model.train()
        model.zero_grad()
        for layer in self.input_layers:       # nothing reads dL/dx of the network's input
            layer.input_grad = False
        for _, layer in self.layers:          # the trainer writes dW * D itself
            layer.defer_weight_grad = True
        try:
            logits = model.forward(x)
            ce = self.loss_fn.forward(logits, y)
            model.backward(self.loss_fn.backward())
        finally:
            for layer in self.input_layers:
                layer.input_grad = True
            for _, layer in self.layers:
                layer.defer_weight_grad = False
        return logits, ce

    # -- 2. the threshold penalty ---------------------------------------------
    def _add_penalty(self) -> float:
        """alpha * sum exp(-t) of every layer: its value, and its gradient added to dt."""
        total = 0.0
        if self.method in ("dst", "dfbst"):
            for _, layer in self.layers:
                value, grad = self._penalty_rule(layer.params["threshold"], self.alpha)
                total += value
                layer.set_grad("threshold", layer.grads["threshold"] + grad)
        return total

    # -- 3. the beta term -----------------------------------------------------
    def _beta_on(self, epoch: int, index: int) -> bool:
        """From the second epoch on, never at batch index 0, once a V_prev exists."""
        return self.method == "dfbst" and epoch >= 2 and index != 0 and self.prev is not None

    def _add_beta_term(self, epoch: int, index: int) -> float:
        """beta * V_prev, and u's gradient d(beta V_prev)/du; on other steps u has none."""
        if not self._beta_on(epoch, index):
            return 0.0
        for (_, layer), grad_u in zip(self.layers, self.prev.grad_u):
            layer.set_grad("dthreshold", grad_u)
        return self.beta * self.prev.V

    # -- 4. the backward mask -------------------------------------------------
    def _apply_backward_mask(self):
        """D on every masked layer's dW (SPEC "The backward mask"), kept with V and
        dV/du for the next step; returns the weight gradients to use, by parameter
        name (None for dense and dst: every gradient is used as it is)."""
        if self.method != "dfbst":
            return None
        first = self.layers[0][1]
        bm = self._mask_rule([layer.loss_grad() for _, layer in self.layers],
                             [layer.params["dthreshold"] for _, layer in self.layers],
                             scale=self.beta, estimator=first.estimator,
                             float32_masks=first.float32_masks)
        for (_, layer), D in zip(self.layers, bm.patterns):
            layer.set_backward_mask(D)
        self.prev = bm
        return {f"{name}.weight": g for (name, _), g in zip(self.layers, bm.masked)}

    # -- 5. clipping and SGD --------------------------------------------------
    def _clip_and_update(self, used, trace) -> float:
        """Clip the total gradient norm, hand each layer its used weight gradient,
        and take the SGD step. Returns the norm before clipping."""
        grads = self.model.grads
        view = self._clip_view(grads, used)
        grad_norm, norms = self._checked_norm(view)
        if self.clip_norm is not None:
            clip_grad_norm(view, self.clip_norm, sq_norms=norms)
        if used is not None:
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
        if used is None:
            return grads
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
            if layer.dmask is not None and self.method == "dfbst":
                out[f"{name}.dmask"] = np.array(layer.dmask)
        return out

    def _update_for_trace(self) -> Dict[str, np.ndarray]:
        out = {name: np.array(p) for name, p in self.model.params.items()}
        for key, value in self.optimizer.state_dict().items():
            if key.startswith("momentum_buffer."):
                out[key[len("momentum_buffer."):] + ".momentum_buffer"] = value
        return out

    def step_cost(self) -> CostTotals:
        """Training FLOPs of the last step, exact and ideal (SPEC "Cost accounting")."""
        costs = []
        for name, layer in self.layers:
            numel = layer.weight.size
            nnz_d = layer.dmask_nnz
            costs.append(LayerCost(name=name, n=layer.rows, numel=numel, nnz_m=layer.mask_nnz,
                                   nnz_d=numel if nnz_d is None else nnz_d))
        return total_cost(costs)

    def end_epoch(self) -> None:
        """Advance the learning-rate schedule (call once at the end of every epoch)."""
        self.scheduler.step()

    @property
    def lr(self) -> float:
        return self.optimizer.lr


def _textbook_backward_mask(dWs, us, scale: float, estimator, float32_masks: bool) -> BackwardMask:
    """:func:`dfbst_np.textbook.backward_mask` on the layers' loss gradients, as a
    :class:`~dfbst_np.sparse.backward_mask.BackwardMask` (the textbook knows only
    the long-tailed estimator, which the Trainer checked)."""
    Ds, masked, V, dV_du = tb.backward_mask([g.dense() for g in dWs], us, scale=scale,
                                            float32_masks=float32_masks)
    return BackwardMask([Pattern(keep=D != 0) for D in Ds], [Entries(g) for g in masked], V,
                        dV_du, [g.dtype for g in masked])


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
