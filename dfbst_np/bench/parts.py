"""Time per part of a dfbst_np step, through public interfaces only.

A step's parts are timed on an instrumented twin of the variant (same model,
same state), never on the variant whose step times are reported:

* the method's work (the forward mask, the gradient rule, the loss terms on
  the method's parameters and the backward mask: "masks") and the layers'
  products ("forward", "backward_data") through the hooks of a **wrapped
  implementation object** (:func:`timed_implementation`), which the model is
  built with (``models.build(..., method=<implementation>)``, SPEC section 8);
* the weight-gradient products ("weight_grad": the full A, or the sampled
  product on a support and the support itself) by wrapping the public names
  of :mod:`dfbst_np.sparse.kernels`, the facade through which layers call
  every product (and which exists so that they can be wrapped);
* the optimiser ("optimiser": ``optimizer.step``) by wrapping that method of
  the twin's optimiser object.

Times are exclusive: a hook's time does not include the parts timed inside
it (the forward hook's time is the products and their preparation, without
the forward mask it calls). "other" is the rest of the step (activations,
pooling, im2col, the loss, clipping, Python).
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Dict

from ..sparse import kernels
from .common import PARTS

#: Implementation hooks and the part each one's (exclusive) time belongs to.
HOOK_PARTS = {"forward": "forward", "backward": "backward_data", "forward_mask": "masks",
              "grads": "masks", "alpha_term": "masks", "beta_term": "masks",
              "gradient_mask": "masks", "after_update": "masks"}

#: Names of :mod:`dfbst_np.sparse.kernels` timed as the weight gradient.
KERNEL_PARTS = {"weight_gradient": "weight_grad", "weight_gradient_t": "weight_grad",
                "sampled_product_csr": "weight_grad", "support_structure": "weight_grad"}


class PartTimer:
    """Exclusive time per part: a part timed inside another is taken out of the outer one."""

    def __init__(self) -> None:
        self.acc = dict.fromkeys(PARTS, 0.0)
        self.active = False
        self._stack = []

    def call(self, part: str, fn, *args, **kwargs):
        if not self.active:
            return fn(*args, **kwargs)
        frame = [0.0]                          # time of the parts timed inside this one
        self._stack.append(frame)
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            elapsed = time.perf_counter() - t0
            self._stack.pop()
            self.acc[part] += elapsed - frame[0]
            if self._stack:
                self._stack[-1][0] += elapsed


def timed_implementation(impl, timer: PartTimer):
    """A copy of the implementation object ``impl`` whose hooks report their time to ``timer``.

    The copy is an instance of a subclass of ``impl``'s class that wraps each
    hook of :data:`HOOK_PARTS` it has; the hooks ``impl`` calls on itself
    (the fast rule's ``forward`` calls ``forward_mask``) are therefore timed
    too. It carries ``impl``'s attributes (its Method among them), so a
    model built with it runs exactly ``impl``'s code.
    """
    base = type(impl)
    namespace = {}
    for name, part in HOOK_PARTS.items():
        if callable(getattr(base, name, None)):
            namespace[name] = _make_hook(name, part, timer)
    cls = type(f"Timed{base.__name__}", (base,), namespace)
    twin = cls.__new__(cls)
    twin.__dict__.update(impl.__dict__)
    return twin


def _make_hook(name: str, part: str, timer: PartTimer):
    def hook(self, *args, **kwargs):
        original = getattr(super(type(self), self), name)
        return timer.call(part, original, *args, **kwargs)
    hook.__name__ = name
    return hook


@contextmanager
def timing(timer: PartTimer, optimizer):
    """Inside the block: ``timer`` active, the kernels of :data:`KERNEL_PARTS` and
    ``optimizer.step`` reporting to it; all restored after it."""
    saved = []
    try:
        for name, part in KERNEL_PARTS.items():
            original = getattr(kernels, name)
            saved.append((name, original))
            setattr(kernels, name, _wrap(timer, part, original))
        step = optimizer.step
        optimizer.step = _wrap(timer, "optimiser", step)
        timer.active = True
        yield timer
    finally:
        timer.active = False
        for name, original in saved:
            setattr(kernels, name, original)
        optimizer.__dict__.pop("step", None)


def _wrap(timer: PartTimer, part: str, fn):
    def wrapped(*args, **kwargs):
        return timer.call(part, fn, *args, **kwargs)
    return wrapped


def part_times(twin, steps: int) -> Dict[str, float]:
    """Mean seconds per step of each part, from ``steps`` steps of the instrumented
    ``twin`` (a Variant whose model was built with ``timed_implementation``: its
    ``timer``)."""
    timer = twin.timer
    timer.acc = dict.fromkeys(PARTS, 0.0)
    twin.restore()
    total = 0.0
    with timing(timer, twin.trainer.optimizer):
        for _ in range(steps):
            t0 = time.perf_counter()
            twin.step()
            total += time.perf_counter() - t0
    parts = {k: v / steps for k, v in timer.acc.items()}
    parts["other"] = max(0.0, total / steps - sum(parts[k] for k in PARTS if k != "other"))
    return parts
