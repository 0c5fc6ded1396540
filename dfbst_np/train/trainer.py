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
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

import numpy as np

from ..nn.clip import clip_grad_norm
from ..nn.loss import CrossEntropyLoss
from ..nn.optim import SGD, MultiStepLR
from ..sparse.backward_mask import backward_mask
from ..sparse.ledger import CostTotals, layer_cost, total_cost
from ..sparse.mask_rule import threshold_penalty
from ..sparse.masked import masked_layers


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
    """

    def __init__(self, model, lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 1e-4,
                 alpha: float = 5e-6, beta: float = 0.1, clip_norm: Optional[float] = 1.0,
                 milestones=(80, 120), gamma: float = 0.1) -> None:
        self.model = model
        self.layers = masked_layers(model)
        methods = {layer.method for _, layer in self.layers}
        if len(methods) > 1:
            raise ValueError(f"Trainer: the model mixes methods {sorted(methods)}; use one")
        self.method = methods.pop() if methods else "dense"
        self.alpha, self.beta, self.clip_norm = alpha, beta, clip_norm
        self.loss_fn = CrossEntropyLoss(dtype=model_dtype(model))
        self.optimizer = SGD(model.params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.scheduler = MultiStepLR(self.optimizer, milestones=milestones, gamma=gamma)
        self.prev = None    # the previous step's BackwardMask: V and d(beta V)/du

    def step(self, x: np.ndarray, y: np.ndarray, epoch: int, index: int) -> StepStats:
        """One reference training step on the batch (x, y); epoch counts from 1."""
        model = self.model
        model.train()
        model.zero_grad()
        logits = model.forward(x)
        ce = self.loss_fn.forward(logits, y)
        model.backward(self.loss_fn.backward())

        alpha_term = 0.0
        if self.method in ("dst", "dfbst"):
            for _, layer in self.layers:
                value, grad = threshold_penalty(layer._params["threshold"], self.alpha)
                alpha_term += value
                layer._grads["threshold"] += grad

        beta_term, V = 0.0, None
        if self.method == "dfbst":
            if epoch >= 2 and index != 0 and self.prev is not None:
                beta_term = self.beta * self.prev.V
                for (_, layer), grad_u in zip(self.layers, self.prev.grad_u):
                    layer._grads["dthreshold"] = grad_u
            self.prev = self._apply_backward_mask()
            V = self.prev.V

        grads = model.grads
        grad_norm = self._checked_norm(grads)
        if self.clip_norm is not None:
            clip_grad_norm(grads, self.clip_norm)
        self.optimizer.step(grads)

        return StepStats(
            loss=ce + alpha_term + beta_term, ce=ce, alpha_term=alpha_term, beta_term=beta_term,
            V=V, grad_norm=grad_norm, accuracy=float((logits.argmax(axis=1) == y).mean()),
            density={name: layer.density for name, layer in self.layers},
            bdensity={name: (1.0 if layer.dmask is None else float(layer.dmask.mean()))
                      for name, layer in self.layers},
            cost=self.step_cost())

    def _apply_backward_mask(self):
        """D on every masked layer's dW (SPEC "The backward mask"); returns V and dV/du."""
        first = self.layers[0][1]
        dWs = [layer._grads["weight"].reshape(layer.weight.shape[0], -1) for _, layer in self.layers]
        us = [layer._params["dthreshold"] for _, layer in self.layers]
        bm = backward_mask(dWs, us, scale=self.beta, estimator=first.estimator,
                           float32_masks=first.float32_masks)
        for (_, layer), D, g in zip(self.layers, bm.D, bm.masked):
            layer.dmask = D.reshape(layer.weight.shape)
            layer._grads["weight"] = g.reshape(layer.weight.shape)
        return bm

    @staticmethod
    def _checked_norm(grads: Dict[str, np.ndarray]) -> float:
        """Total L2 norm of all gradients; names the first non-finite one."""
        norm = float(np.sqrt(sum(float(np.vdot(g, g)) for g in grads.values())))
        if not np.isfinite(norm):
            bad = next(name for name, g in grads.items() if not np.isfinite(g).all())
            raise FloatingPointError(f"Trainer: the gradient of {bad!r} contains NaN or inf")
        return norm

    def step_cost(self) -> CostTotals:
        """Training FLOPs of the last step, exact and ideal (SPEC "Cost accounting")."""
        # A dense layer keeps every weight: a broadcast view counts them without a copy.
        return total_cost(
            layer_cost(name, layer.rows,
                       layer.mask if layer.mask is not None else np.broadcast_to(True, layer.weight.shape),
                       layer.dmask)
            for name, layer in self.layers)

    def end_epoch(self) -> None:
        """Advance the learning-rate schedule (call once at the end of every epoch)."""
        self.scheduler.step()

    @property
    def lr(self) -> float:
        return self.optimizer.lr


def model_dtype(model) -> np.dtype:
    """The dtype of a model's parameters (all of them share it)."""
    return next(iter(model.params.values())).dtype


def evaluate(model, images: np.ndarray, labels: np.ndarray, batch_size: int = 100):
    """Accuracy and mean cross-entropy of ``model`` in eval mode, batch by batch."""
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
