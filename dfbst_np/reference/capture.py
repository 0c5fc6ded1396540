"""What a user's PyTorch training step produced, stage by stage, without touching their code.

:class:`StepCapture` watches one call of ``step(model, x, y, epoch, index)``
through hooks that PyTorch offers for exactly this:

* ``forward``: a forward hook on the model keeps the output of its first
  call (the logits); the loss is the tensor the step calls ``backward`` on
  (``torch.autograd.backward`` is wrapped for the duration of the step, so
  ``loss.backward()`` is seen too; several calls are summed);
* ``grad``: a tensor hook (``Tensor.register_hook``) on every parameter sees
  the gradient autograd computed *before* it is accumulated into ``.grad``,
  so a backward mask or a clipping that rewrites ``.grad`` afterwards cannot
  change what was recorded (the hook keeps a copy);
* ``mask``: M and D from the ``mask`` / ``dmask`` attributes of the model's
  modules (or the attribute paths of a name map), read just before the
  optimiser steps;
* ``used_grad``: every ``.grad`` just before the optimiser steps, and the
  momentum buffers the step starts from, through torch's global optimiser
  step hooks (``torch.optim.optimizer.register_optimizer_step_pre_hook``),
  so the optimiser can live anywhere in the user's code;
* ``update``: the momentum buffers once the step has returned (read from
  every optimiser seen stepping, so a buffer the step changes after
  ``opt.step()``, e.g. multiplied by D, is what is recorded); the caller
  reads the parameters then too.

Everything is recorded under the torch model's own names; translating them
is the caller's business.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

import torch
import torch.nn as nn
from torch.optim.optimizer import (register_optimizer_step_post_hook,
                                   register_optimizer_step_pre_hook)


def _copy(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone()


def resolve_attribute(model: nn.Module, path: str):
    """``model.a.b.c`` for ``path = "a.b.c"`` (numeric parts index containers); None if absent."""
    obj = model
    for part in path.split("."):
        if part == "":
            continue
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


class StepCapture:
    """Hooks on a torch model that record one training step at a time.

    Parameters
    ----------
    model : torch.nn.Module
    mask_paths : list of str, or a callable returning one
        Dotted attribute paths of the masks to read (``"fc1.mask"``,
        ``"fc1.dmask"``, or a name map's own paths); a callable is asked
        at every read, since a step may create its ``dmask`` attributes
        only once it has run.

    Use as a context manager around the whole run, and :meth:`run` for each step.
    """

    def __init__(self, model: nn.Module, mask_paths) -> None:
        self.model = model
        self.mask_paths = mask_paths if callable(mask_paths) else (lambda paths=list(mask_paths): paths)
        self.param_names = {id(p): name for name, p in model.named_parameters()}
        self._handles: list = []
        self._active = False
        self._clear()

    def _clear(self) -> None:
        self.logits: Optional[torch.Tensor] = None
        self.loss: Optional[torch.Tensor] = None
        self.grads: Dict[str, torch.Tensor] = {}
        self.used_grads: Optional[Dict[str, torch.Tensor]] = None
        self.masks: Dict[str, torch.Tensor] = {}
        self.momentum_before: Dict[str, torch.Tensor] = {}
        self.momentum_after: Dict[str, torch.Tensor] = {}
        self.optimizer_steps = 0
        self.optimizers: list = []
        self.returned = None

    # -- hooks -------------------------------------------------------------
    def _on_grad(self, name: str) -> Callable:
        def hook(grad):
            if self._active:
                prev = self.grads.get(name)
                self.grads[name] = _copy(grad) if prev is None else prev + grad.detach()
            return None
        return hook

    def _on_forward(self, module, inputs, output) -> None:
        if self._active and self.logits is None and isinstance(output, torch.Tensor):
            self.logits = _copy(output)

    def _own_params(self, optimizer):
        for group in optimizer.param_groups:
            for p in group["params"]:
                name = self.param_names.get(id(p))
                if name is not None:
                    yield name, p

    def _on_step_pre(self, optimizer, args, kwargs) -> None:
        if not self._active:
            return
        owned = list(self._own_params(optimizer))
        if not owned:
            return
        self.optimizer_steps += 1
        if not any(o is optimizer for o in self.optimizers):
            self.optimizers.append(optimizer)
        if self.used_grads is None:
            self.used_grads = {}
        for name, p in owned:
            if p.grad is not None and name not in self.used_grads:
                self.used_grads[name] = _copy(p.grad)
            buf = optimizer.state.get(p, {}).get("momentum_buffer")
            if buf is not None and name not in self.momentum_before:
                self.momentum_before[name] = _copy(buf)
        self._read_masks()

    def _on_step_post(self, optimizer, args, kwargs) -> None:
        if not self._active:
            return
        self._read_momentum(optimizer)

    def _read_momentum(self, optimizer) -> None:
        for name, p in self._own_params(optimizer):
            buf = optimizer.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                self.momentum_after[name] = _copy(buf)

    def _read_masks(self) -> None:
        for path in self.mask_paths():
            value = resolve_attribute(self.model, path)
            if isinstance(value, torch.Tensor):
                self.masks[path] = _copy(value)

    # -- running -------------------------------------------------------------
    def __enter__(self) -> "StepCapture":
        for name, p in self.model.named_parameters():
            if p.requires_grad:          # a frozen parameter has no gradient to watch
                self._handles.append(p.register_hook(self._on_grad(name)))
        self._handles.append(self.model.register_forward_hook(self._on_forward))
        self._handles.append(register_optimizer_step_pre_hook(self._on_step_pre))
        self._handles.append(register_optimizer_step_post_hook(self._on_step_post))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def run(self, step: Callable, *args) -> None:
        """Call ``step(*args)`` and record it; the previous step's records are dropped."""
        self._clear()
        backward = torch.autograd.backward

        def watched_backward(tensors, *a, **kw):
            # The loss is whatever the step differentiates; only scalars count
            # (a vector-Jacobian product has no loss value to compare).
            if isinstance(tensors, torch.Tensor) and tensors.numel() == 1:
                value = tensors.detach().reshape(())
                self.loss = value.clone() if self.loss is None else self.loss + value
            return backward(tensors, *a, **kw)

        self._active = True
        torch.autograd.backward = watched_backward
        try:
            self.returned = step(*args)
        finally:
            torch.autograd.backward = backward
            self._active = False
        for optimizer in self.optimizers:
            # what the step left, after anything it did past opt.step()
            self._read_momentum(optimizer)
        if self.optimizer_steps == 0:
            # No torch.optim optimiser stepped: the gradients left in .grad are
            # the best record of what was applied.
            self.used_grads = {name: _copy(p.grad) for name, p in self.model.named_parameters()
                               if p.grad is not None}
            self._read_masks()
        elif not self.masks:
            self._read_masks()

    def returned_loss(self) -> Optional[float]:
        """The loss the step returned, if it returned one (a number, a tensor or a dict's ``loss``)."""
        value = self.returned
        if isinstance(value, dict):
            value = value.get("loss")
        elif hasattr(value, "loss"):
            value = getattr(value, "loss")
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            return float(value.detach())
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        return None
