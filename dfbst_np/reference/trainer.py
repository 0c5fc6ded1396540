"""One reference training step, with torch autograd (SPEC "Objective and
optimiser, per step").

The order inside :meth:`ReferenceTrainer.step` is the specification:
forward -> loss = CE + alpha * sum exp(-t) [+ beta * V_prev] -> backward ->
backward mask D on every DFBST layer (dW <- dW * D) -> V of this step ->
gradient clipping -> SGD.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import methods
from .layers import masked_layers


def _model_dtype(model: nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


def as_inputs(model: nn.Module, x, y=None):
    """Turn a batch into tensors for ``model`` without silent casting.

    Images must already have the model's floating dtype (NumPy arrays or
    tensors); labels may be any integer array and become int64.
    """
    dtype = _model_dtype(model)
    xt = torch.as_tensor(x)
    if xt.dtype != dtype:
        raise TypeError(f"{type(model).__name__}: images must have dtype {dtype}, got {xt.dtype}; "
                        "cast them explicitly")
    if y is None:
        return xt
    yt = torch.as_tensor(y)
    if yt.dtype.is_floating_point or yt.dtype == torch.bool:
        raise TypeError(f"{type(model).__name__}: labels must be integers, got {yt.dtype}")
    return xt, yt.long()


class ReferenceTrainer:
    """The authors' training step as SPEC states it.

    Parameters
    ----------
    model : torch.nn.Module
        A model from :func:`~dfbst_np.reference.models.build` (its masked
        layers carry their method: ``dense``, ``dst`` or ``dfbst``).
    lr, momentum, weight_decay : float
        ``torch.optim.SGD`` over every parameter; parameters without a
        gradient on a step (u on most steps) are left untouched.
    alpha : float
        Weight of the threshold penalty alpha * sum_i exp(-t_i) (dst, dfbst layers).
    beta : float
        Weight of beta * V_prev (dfbst layers), added only when ``epoch >= 2``
        and ``index != 0``.
    clip_norm : float or None
        Max total L2 norm of all gradients (``clip_grad_norm_``); None: no clipping.
    milestones, gamma :
        ``MultiStepLR`` schedule, stepped by :meth:`end_epoch`.

    Attributes
    ----------
    V_prev : torch.Tensor or None
        V of the last step, still attached to the u's through the estimator of H.
    """

    def __init__(self, model: nn.Module, lr: float = 0.1, momentum: float = 0.9,
                 weight_decay: float = 1e-4, alpha: float = 5e-6, beta: float = 0.1,
                 clip_norm: Optional[float] = 1.0, milestones: Sequence[int] = (80, 120),
                 gamma: float = 0.1) -> None:
        self.model = model
        self.alpha = alpha
        self.beta = beta
        self.clip_norm = clip_norm
        self.optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                                         weight_decay=weight_decay)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=list(milestones), gamma=gamma)
        self.V_prev: Optional[torch.Tensor] = None

    @property
    def lr(self) -> float:
        """Current learning rate."""
        return float(self.optimizer.param_groups[0]["lr"])

    def step(self, x, y, epoch: int, index: int) -> Dict[str, float]:
        """One training step on the batch (x, y).

        Parameters
        ----------
        x : array or tensor (N, C, H, W)
            Images in the model's dtype.
        y : integer array or tensor (N,)
        epoch : int
            Epoch number, counting from 1.
        index : int
            Batch index within the epoch, counting from 0.

        Returns
        -------
        dict of float
            ``loss`` (total objective), ``ce``, ``alpha_term``, ``beta_term``
            (0.0 when not added), ``V`` (this step's V; nan without DFBST
            layers) and ``grad_norm`` (total gradient norm before clipping).
        """
        model = self.model
        xt, yt = as_inputs(model, x, y)
        layers = [m for _, m in masked_layers(model)]
        model.train()
        logits = model(xt)
        ce = F.cross_entropy(logits, yt)
        loss = ce
        alpha_term = 0.0
        for m in layers:
            if m.threshold is not None:
                term = self.alpha * torch.sum(torch.exp(-m.threshold))
                loss = loss + term
                alpha_term += float(term.detach())
        beta_term = 0.0
        dfbst = [m for m in layers if methods.get(m.method).learns_backward_mask]
        # V_prev carries u's graph from the previous step; adding it is what
        # gives u a gradient. Outside these steps u must get none at all.
        if dfbst and epoch >= 2 and index != 0 and self.V_prev is not None:
            term = self.beta * self.V_prev
            loss = loss + term
            beta_term = float(term.detach())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.V_prev = None

        masked = [g for g in (m.apply_backward_mask() for m in dfbst) if g is not None]
        V = float("nan")
        if masked:
            self.V_prev = torch.std(torch.cat([g.reshape(-1) for g in masked]))
            V = float(self.V_prev.detach())

        params = [p for p in model.parameters() if p.grad is not None]
        if self.clip_norm is not None:
            grad_norm = float(nn.utils.clip_grad_norm_(params, self.clip_norm))
        else:
            grad_norm = float(torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))) if params else 0.0
        self.optimizer.step()
        return {"loss": float(loss.detach()), "ce": float(ce.detach()), "alpha_term": alpha_term,
                "beta_term": beta_term, "V": V, "grad_norm": grad_norm}

    def end_epoch(self) -> None:
        """Advance the learning-rate schedule by one epoch."""
        self.scheduler.step()


def evaluate(model: nn.Module, x, y, batch_size: int = 100) -> Dict[str, float]:
    """Test loss and accuracy in evaluation mode, as the reference's test loop.

    The forward still applies the reset rule (the reference does so in every
    forward). ``loss`` is the mean over batches of the batch-mean CE, as the
    reference reports it; ``accuracy`` is a fraction in [0, 1].
    """
    xt, yt = as_inputs(model, x, y)
    was_training = model.training
    model.eval()
    losses, correct = [], 0
    with torch.no_grad():
        for s in range(0, xt.shape[0], batch_size):
            logits = model(xt[s:s + batch_size])
            losses.append(float(F.cross_entropy(logits, yt[s:s + batch_size])))
            correct += int((logits.argmax(dim=1) == yt[s:s + batch_size]).sum())
    model.train(was_training)
    return {"loss": float(np.mean(losses)) if losses else float("nan"),
            "accuracy": correct / max(int(xt.shape[0]), 1)}
