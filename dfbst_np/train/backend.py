"""Backends of the run loop: who executes the training steps of a run.

The run loop (:mod:`.run`) asks :func:`trainer_for` for a backend and uses
only this interface of it:

* ``step(x, y, epoch, index) -> StepStats`` and ``end_epoch()``, ``lr``
  (the NumPy :class:`~.trainer.Trainer`'s contract);
* ``evaluate(images, labels, batch_size) -> (accuracy, mean CE)``;
* ``densities() -> {"density/<layer>": ..., "bdensity/<layer>": ...,
  "density": ..., "bdensity": ...}`` of the last masks;
* ``state() -> {key: array}`` in the checkpoint's format (``model/``,
  ``optim/``, ``sched/``, ``mask/``, ``dmask/``), ``load_state(arrays)`` and
  ``optional_state()`` (templates of the entries a checkpoint may lack);
  a backend module may offer ``check_method(method)``, which refuses a
  method it has no twin of;
* ``kernel_costs()``: a ``with`` block in which the backend's choice of
  kernels is the one its checkpoint recorded (the NumPy backend's ``costs/``
  entries, :data:`COST_ENTRIES`; a backend without such a choice has nothing
  to do);
* ``model``: the backend's own model object.

``numpy`` is :class:`NumpyBackend` below. Other backends register
themselves (:func:`dfbst_np.backend_registry.register_backend`): ``torch``,
:class:`dfbst_np.reference.backend.TorchBackend`, is registered by the
``dfbst_np`` package as a loader that imports it only when asked for, so that
``import dfbst_np`` and NumPy runs never need PyTorch, and nothing in
``dfbst_np.train`` imports ``dfbst_np.reference``. Both
start from the same initial weights, those the NumPy model draws from
``default_rng(seed)``, and both write the same checkpoint keys and arrays,
so a run may continue on either (the NumPy backend adds its kernel costs,
``costs/``, which the torch backend keeps as it found them).
"""
from __future__ import annotations

import contextlib
from typing import Dict

import numpy as np

from .. import methods
from ..backend_registry import backend_names, load_backend
from ..models import build
from ..sparse import costs as kernel_costs
from ..sparse.masked import masked_layers
from ..errors import ConfigError
from .checkpoint import strip_prefix, with_prefix
from .config import RunConfig
from .trainer import StepStats, Trainer, evaluate

DEVICES = ("cpu", "cuda")

#: Templates of the checkpoint entries that record the NumPy backend's kernel
#: costs (``costs/<dtype>``, :func:`dfbst_np.sparse.costs.to_array`): optional
#: (older checkpoints and the torch backend's lack them), ignored by backends
#: that choose no kernels.
COST_ENTRIES = {f"costs/{np.dtype(dt).name}": kernel_costs.to_array(c)
                for dt, c in kernel_costs.BUILTIN.items()}


class BackendUnavailable(ConfigError):
    """The chosen backend or device cannot run here (a user's choice, not a bug)."""


def build_model(cfg: RunConfig, num_classes: int):
    """The NumPy model of ``cfg``, its weights drawn from ``default_rng(cfg.seed)``."""
    impl = methods.implementation(cfg.method, "textbook" if cfg.textbook else "fast")
    options = cfg.method_options()
    if options:                # a method's options (gmp, set, rigl): a configured copy
        impl = impl.configured(**options)
    return build(cfg.model, method=impl, num_classes=num_classes, dtype=np.dtype(cfg.dtype),
                 rng=np.random.default_rng(cfg.seed), kernel_path=cfg.kernel_path,
                 weight_grad=cfg.weight_grad)


def build_trainer(cfg: RunConfig, model, steps_per_epoch=None) -> Trainer:
    """The NumPy Trainer of ``cfg`` (``steps_per_epoch``: the run's, for a method's schedule)."""
    return Trainer(model, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                   alpha=cfg.alpha, beta=cfg.beta, clip_norm=cfg.clip_norm,
                   milestones=cfg.milestones, gamma=cfg.gamma, steps_per_epoch=steps_per_epoch,
                   epochs=cfg.epochs)


def overall_densities(per_layer: Dict[str, tuple]) -> Dict[str, float]:
    r"""Density columns from ``{layer: (numel, forward density, backward density)}``.

    The overall densities weight each layer by its size:
    :math:`\sum_l \mathrm{numel}_l\, d_l / \sum_l \mathrm{numel}_l`.
    """
    out: Dict[str, float] = {}
    total = sum(numel for numel, _, _ in per_layer.values()) or 1
    fwd = bwd = 0.0
    for name, (numel, f, b) in per_layer.items():
        out[f"density/{name}"], out[f"bdensity/{name}"] = f, b
        fwd += f * numel
        bwd += b * numel
    out["density"], out["bdensity"] = fwd / total, bwd / total
    return out


def mask_densities(model) -> Dict[str, float]:
    """Forward and backward density per masked layer and overall (weighted by size)."""
    return overall_densities({
        name: (layer.weight.size, layer.density, layer.bdensity)
        for name, layer in masked_layers(model)})


class Backend:
    """What the run loop uses of a backend: a model, a trainer and the methods
    below (see the module docstring). ``end_epoch`` and ``lr`` are the trainer's."""

    name: str
    model: object
    trainer: object

    def step(self, x: np.ndarray, y: np.ndarray, epoch: int, index: int) -> StepStats:
        raise NotImplementedError

    def end_epoch(self) -> None:
        self.trainer.end_epoch()

    @property
    def lr(self) -> float:
        return self.trainer.lr

    def evaluate(self, images: np.ndarray, labels: np.ndarray, batch_size: int):
        raise NotImplementedError

    def densities(self) -> Dict[str, float]:
        raise NotImplementedError

    def state(self) -> Dict[str, np.ndarray]:
        raise NotImplementedError

    def load_state(self, arrays: Dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def optional_state(self) -> Dict[str, np.ndarray]:
        """Templates (shape, dtype) of the checkpoint entries that may be absent:
        the momentum buffers of parameters that never had a gradient, the masks."""
        raise NotImplementedError

    def kernel_costs(self):
        """A ``with`` block in which the kernel choices are those the loaded checkpoint
        recorded (none here)."""
        return contextlib.nullcontext()


class NumpyBackend(Backend):
    """The NumPy :class:`~.trainer.Trainer` and its model, as the run loop drives them."""

    name = "numpy"

    def __init__(self, model, trainer: Trainer) -> None:
        self.model, self.trainer = model, trainer
        self._costs: Dict[np.dtype, kernel_costs.KernelCosts] = {}   # recorded by the checkpoint

    def step(self, x: np.ndarray, y: np.ndarray, epoch: int, index: int) -> StepStats:
        return self.trainer.step(x, y, epoch=epoch, index=index)

    def evaluate(self, images: np.ndarray, labels: np.ndarray, batch_size: int):
        return evaluate(self.model, images, labels, batch_size)

    def densities(self) -> Dict[str, float]:
        return mask_densities(self.model)

    def state(self) -> Dict[str, np.ndarray]:
        arrays = with_prefix("model", self.model.state_dict())
        arrays.update(with_prefix("optim", self.trainer.optimizer.state_dict()))
        arrays.update(with_prefix("sched", self.trainer.scheduler.state_dict()))
        arrays.update(with_prefix("method", self.trainer.state_dict()))
        for name, layer in masked_layers(self.model):
            if layer.mask is not None:
                arrays[f"mask/{name}"] = layer.mask.astype(bool)
            if layer.dmask is not None:
                arrays[f"dmask/{name}"] = layer.dmask.astype(bool)
        for dt, c in kernel_costs.in_use().items():   # the "auto" path's choices, for a resume
            arrays[f"costs/{dt.name}"] = kernel_costs.to_array(c)
        return arrays

    def optional_state(self) -> Dict[str, np.ndarray]:
        optional = {f"optim/momentum_buffer.{name}": p for name, p in self.model.params.items()}
        for name, layer in masked_layers(self.model):
            optional[f"mask/{name}"] = optional[f"dmask/{name}"] = np.zeros(layer.weight.shape, bool)
        return optional

    def load_state(self, arrays: Dict[str, np.ndarray]) -> None:
        self.model.load_state_dict(strip_prefix("model", arrays))
        self.trainer.optimizer.load_state_dict(strip_prefix("optim", arrays))
        self.trainer.scheduler.load_state_dict(strip_prefix("sched", arrays))
        self.trainer.load_state_dict(strip_prefix("method", arrays))
        for name, layer in masked_layers(self.model):    # the predicted mode's last D
            if f"dmask/{name}" in arrays:
                layer.dmask = arrays[f"dmask/{name}"].astype(layer.dtype)
        self._costs = {}
        for dtype, values in strip_prefix("costs", arrays).items():
            try:
                self._costs[np.dtype(dtype)] = kernel_costs.from_array(values)
            except ValueError as e:
                raise ValueError(f"entry 'costs/{dtype}': {e}") from None

    def kernel_costs(self):
        """The kernel costs the checkpoint recorded are in use for the ``with`` block
        (:func:`dfbst_np.sparse.costs.using`): resumed, a run chooses its products'
        paths as it did before, hence computes the same numbers."""
        return kernel_costs.using(self._costs)


def check_backend(cfg: RunConfig) -> None:
    """Fail early, with one line, on a backend or device this machine cannot run;
    return the chosen backend's loaded module (None for numpy)."""
    if cfg.backend not in backend_names():
        raise BackendUnavailable(f"unknown backend {cfg.backend!r}; expected one of {backend_names()}")
    if cfg.device not in DEVICES:
        raise BackendUnavailable(f"unknown device {cfg.device!r}; expected one of {DEVICES}")
    if cfg.backend == "numpy":
        if cfg.device != "cpu":
            raise BackendUnavailable(f"--device {cfg.device} needs --backend torch "
                                     "(the NumPy backend runs on the CPU)")
        return None
    if cfg.weight_grad != "exact":
        raise BackendUnavailable(f"--weight-grad {cfg.weight_grad} is NumPy's accelerated "
                                 f"approximation; --backend {cfg.backend} computes the exact step")
    backend = load_backend(cfg.backend)
    backend.check_device(cfg.device)
    check_method = getattr(backend, "check_method", None)    # a backend may lack some methods
    if check_method is not None:
        check_method(cfg.method)
    return backend


def trainer_for(cfg: RunConfig, num_classes: int, steps_per_epoch=None):
    """The backend that runs ``cfg``'s training steps (see the module docstring)."""
    backend = check_backend(cfg)
    model = build_model(cfg, num_classes)     # every backend's initial weights
    if backend is None:
        return NumpyBackend(model, build_trainer(cfg, model, steps_per_epoch))
    return backend.make_backend(cfg, model, num_classes)
