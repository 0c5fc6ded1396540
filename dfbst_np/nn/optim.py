"""Optimisers and the learning-rate schedule, step for step as in PyTorch.

``SGD`` and ``Adam`` reproduce ``torch.optim.SGD`` and ``torch.optim.Adam``
(single parameter group, ``maximize=False``, no amsgrad), and
``MultiStepLR`` reproduces ``torch.optim.lr_scheduler.MultiStepLR``.

Parameters and gradients are dicts keyed by dotted name (``model.params``,
``model.grads``); parameters are updated in place. A parameter whose name is
absent from the gradient dict has *no* gradient this step, which is not a
zero gradient: it is left entirely alone (no weight decay, no momentum, its
state kept), as PyTorch does for ``p.grad is None``. The DFBST trainer relies
on this for the backward thresholds, which only get a gradient on some steps.

State dicts are flat ``{str: ndarray}`` dicts (hyperparameters as 0-d
arrays, per-parameter state under ``"<slot>.<parameter name>"``), so that a
checkpoint is a plain ``.npz`` file without pickles.
"""
from __future__ import annotations

import bisect
import math
from typing import Callable, Dict, Iterable, Mapping, Tuple

import numpy as np

from .checks import check_finite


def _check_params(params, who: str) -> Dict[str, np.ndarray]:
    if not isinstance(params, Mapping):
        raise TypeError(f"{who}: params must be a dict {{name: ndarray}} such as model.params, "
                        f"got {type(params).__name__}")
    if not params:
        raise ValueError(f"{who}: got an empty parameter dict")
    for name, p in params.items():
        if not isinstance(p, np.ndarray) or p.dtype.kind != "f":
            what = p.dtype.name if isinstance(p, np.ndarray) else type(p).__name__
            raise TypeError(f"{who}: parameter '{name}' must be a floating-point ndarray, got {what}")
    return dict(params)


def _scalar(value, key: str):
    a = np.asarray(value)
    if a.shape != ():
        raise ValueError(f"state dict entry '{key}' must be a scalar (0-d array), got shape {a.shape}")
    return a.item()


class Optimizer:
    """What every optimiser shares: named parameters, checked gradients, state dicts.

    A subclass declares its hyperparameters in ``_hyper`` (name -> converter
    used when loading), its per-parameter state arrays in ``_slots``, checks
    hyperparameters in ``_check_hyper`` and updates one parameter in
    ``_update``.
    """

    _hyper: Dict[str, Callable] = {}
    _slots: Tuple[str, ...] = ()

    def __init__(self, params: Mapping[str, np.ndarray], **hyper) -> None:
        self.params = _check_params(params, type(self).__name__)
        self._check_hyper(hyper)
        for key, value in hyper.items():
            setattr(self, key, value)
        self.state: Dict[str, Dict[str, np.ndarray]] = {}

    # -- to be provided by subclasses ------------------------------------
    def _check_hyper(self, h: Mapping) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:  # pragma: no cover
        raise NotImplementedError

    def _slot_shape(self, slot: str, p: np.ndarray) -> Tuple[int, ...]:
        return p.shape

    def _slot_dtype(self, slot: str, p: np.ndarray) -> np.dtype:
        return p.dtype

    # -- stepping ----------------------------------------------------------
    def step(self, grads: Mapping[str, np.ndarray], check_finite: bool = True) -> None:
        """Update every parameter that has a gradient in ``grads``, in place.

        ``check_finite=False`` skips the NaN/inf scan of every gradient, for a
        caller that has just checked (a finite total norm, as the trainer's);
        names, shapes and dtypes are always checked.
        """
        # A scheduler or the user may have changed lr since the last step.
        self._check_hyper(self.hyperparameters())
        self._check_grads(grads, check_finite)
        # All gradients are checked before anything moves, so a bad gradient
        # never leaves the model half updated.
        for name, p in self.params.items():
            if name in grads:
                self._update(name, p, grads[name])

    def _check_grads(self, grads: Mapping[str, np.ndarray], finite: bool = True) -> None:
        who = type(self).__name__
        unknown = sorted(set(grads) - set(self.params))
        if unknown:
            raise KeyError(f"{who}: gradients for parameters it does not optimise: {unknown}")
        for name, g in grads.items():
            p = self.params[name]
            if not isinstance(g, np.ndarray):
                raise TypeError(f"{who}: gradient of '{name}' must be an ndarray, got {type(g).__name__}")
            if g.shape != p.shape or g.dtype != p.dtype:
                raise ValueError(
                    f"{who}: gradient of '{name}' has shape {g.shape} and dtype {g.dtype.name}, "
                    f"the parameter has shape {p.shape} and dtype {p.dtype.name}")
            if finite:
                check_finite(g, f"{who}: gradient of '{name}'")

    def zero_entries(self, name: str, where: np.ndarray) -> None:
        """Set parameter ``name``'s state (e.g. its momentum buffer) to 0 where
        ``where`` is True, as a pruning method does for the weights it removes.

        ``where`` is a boolean array of the parameter's shape. A parameter with
        no state yet (no gradient so far) is left as it is, and so is per-parameter
        state that is not per entry (Adam's step count).
        """
        if name not in self.params:
            raise KeyError(f"{type(self).__name__}: no parameter {name!r}")
        where = np.asarray(where)
        if where.dtype != bool or where.shape != self.params[name].shape:
            raise ValueError(f"{type(self).__name__}: zero_entries({name!r}) takes a bool array of "
                             f"shape {self.params[name].shape}, got {where.dtype} {where.shape}")
        for value in self.state.get(name, {}).values():
            if value.shape == where.shape:
                value[where] = 0

    # -- state dicts -------------------------------------------------------
    def hyperparameters(self) -> Dict[str, object]:
        return {key: getattr(self, key) for key in self._hyper}

    def state_dict(self) -> Dict[str, np.ndarray]:
        """Copies of hyperparameters and per-parameter state as a flat dict of arrays."""
        out = {key: np.array(value) for key, value in self.hyperparameters().items()}
        for name, slots in self.state.items():
            for slot, value in slots.items():
                out[f"{slot}.{name}"] = value.copy()
        return out

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Replace hyperparameters and state with copies of ``state``'s.

        Parameters that have no state in ``state`` (they never had a gradient)
        start afresh. State arrays are cast to their parameter's dtype, as
        ``torch.optim.Optimizer.load_state_dict`` does.
        """
        who = type(self).__name__
        missing = sorted(set(self._hyper) - set(state))
        per_param: Dict[str, Dict[str, np.ndarray]] = {}
        unknown = []
        for key, value in state.items():
            if key in self._hyper:
                continue
            slot, _, name = key.partition(".")
            if slot not in self._slots or name not in self.params:
                unknown.append(key)
                continue
            per_param.setdefault(name, {})[slot] = value
        if missing or unknown:
            raise KeyError(f"{who}: state dict does not match; missing keys {missing}, "
                           f"unknown keys {sorted(unknown)} (per-parameter keys are "
                           f"'<slot>.<parameter>' with slots {list(self._slots)})")
        hyper = {key: conv(state[key], key) for key, conv in self._hyper.items()}
        self._check_hyper(hyper)

        new_state: Dict[str, Dict[str, np.ndarray]] = {}
        for name, slots in per_param.items():
            absent = [s for s in self._slots if s not in slots]
            if absent:
                raise KeyError(f"{who}: state of '{name}' is incomplete, missing "
                               f"{[f'{s}.{name}' for s in absent]}")
            p = self.params[name]
            new_state[name] = {}
            for slot in self._slots:
                a = np.asarray(slots[slot])
                shape = self._slot_shape(slot, p)
                if a.shape != shape:
                    raise ValueError(f"{who}: '{slot}.{name}' expected shape {shape}, got {a.shape}")
                check_finite(a, f"{who}: state dict entry '{slot}.{name}'")
                new_state[name][slot] = a.astype(self._slot_dtype(slot, p), copy=True)
        for key, value in hyper.items():
            setattr(self, key, value)
        self.state = new_state


def _float(value, key):
    return float(_scalar(value, key))


def _bool(value, key):
    return bool(_scalar(value, key))


def _pair(value, key):
    a = np.asarray(value, dtype=np.float64)
    if a.shape != (2,):
        raise ValueError(f"state dict entry '{key}' must have shape (2,), got {a.shape}")
    return (float(a[0]), float(a[1]))


def _check_number(h: Mapping, key: str, low: float = 0.0) -> None:
    v = h[key]
    if not isinstance(v, (int, float, np.integer, np.floating)) or isinstance(v, bool):
        raise ValueError(f"{key} must be a real number, got {v!r}")
    if not (math.isfinite(v) and v >= low):
        raise ValueError(f"Invalid {key} value: {v} (must be finite and >= {low})")


class SGD(Optimizer):
    r"""Stochastic gradient descent with momentum, as ``torch.optim.SGD``.

    For each parameter p with gradient g, step t:

    .. math::
        d &= g + \lambda p \\
        b_1 &= d, \qquad b_t = \mu b_{t-1} + (1 - \tau) d \quad (t > 1) \\
        d &\leftarrow d + \mu b_t \ \text{(Nesterov)}, \qquad d \leftarrow b_t \ \text{(otherwise)} \\
        p &\leftarrow p - \eta d

    with learning rate :math:`\eta` (``lr``), weight decay :math:`\lambda`,
    momentum :math:`\mu` and dampening :math:`\tau`; no buffer is kept when
    :math:`\mu = 0`. t counts the steps on which *this* parameter had a
    gradient, so the first one takes the gradient undamped.

    Parameters
    ----------
    params : dict of str to ndarray
        Parameters by name, updated in place.
    lr : float
        Learning rate, >= 0; an attribute a scheduler may change.
    momentum, dampening, weight_decay : float
        As in PyTorch; momentum and weight_decay >= 0.
    nesterov : bool
        Nesterov momentum; needs momentum > 0 and dampening 0.
    """

    _hyper = {"lr": _float, "momentum": _float, "dampening": _float,
              "weight_decay": _float, "nesterov": _bool}
    _slots = ("momentum_buffer",)

    def __init__(self, params, lr: float, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False) -> None:
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening,
                         weight_decay=weight_decay, nesterov=nesterov)
        self._scratch: Dict[str, np.ndarray] = {}

    def _check_hyper(self, h):
        _check_number(h, "lr")
        _check_number(h, "momentum")
        _check_number(h, "weight_decay")
        _check_number(h, "dampening", low=-math.inf)
        if not isinstance(h["nesterov"], (bool, np.bool_)):
            raise ValueError(f"nesterov must be a bool, got {h['nesterov']!r}")
        if h["nesterov"] and (h["momentum"] <= 0 or h["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening "
                             f"(got momentum={h['momentum']}, dampening={h['dampening']})")

    def load_state_dict(self, state):
        super().load_state_dict(state)
        if self.momentum == 0 and self.state:
            # With momentum 0 PyTorch keeps no buffer, so one would be stale.
            raise ValueError("SGD: state dict has momentum 0 but holds momentum buffers")

    def _update(self, name, p, g):
        # Each line mirrors one tensor op of torch's _single_tensor_sgd, in
        # the same order, so the rounding is the same; one scratch array per
        # parameter keeps the step free of temporaries (it runs every step).
        scratch = self._scratch.get(name)
        if scratch is None or scratch.shape != p.shape or scratch.dtype != p.dtype:
            scratch = self._scratch[name] = np.empty_like(p)
        if self.weight_decay != 0:
            d = np.multiply(p, self.weight_decay, out=scratch)     # d = g + wd * p
            d += g
        else:
            d = g
        if self.momentum != 0:
            slots = self.state.get(name)
            if slots is None:
                buf = d.copy()
                self.state[name] = {"momentum_buffer": buf}
            else:
                buf = slots["momentum_buffer"]
                buf *= self.momentum
                buf += (1 - self.dampening) * d if self.dampening != 0 else d
            d = d + self.momentum * buf if self.nesterov else buf
        p += np.multiply(d, -self.lr, out=scratch)                  # p += -lr * d


class Adam(Optimizer):
    r"""Adam with L2 weight decay, as ``torch.optim.Adam`` (amsgrad off).

    For each parameter p with gradient g, at its own step count t:

    .. math::
        d &= g + \lambda p \\
        m_t &= m_{t-1} + (1 - \beta_1)(d - m_{t-1}) \\
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2)\, d^2 \\
        p &\leftarrow p - \frac{\eta}{1 - \beta_1^t}\,
             \frac{m_t}{\sqrt{v_t} / \sqrt{1 - \beta_2^t} + \epsilon}

    with :math:`m_0 = v_0 = 0`. t counts only the steps on which this
    parameter had a gradient.

    Parameters
    ----------
    params : dict of str to ndarray
        Parameters by name, updated in place.
    lr : float
        Learning rate, >= 0.
    betas : (float, float)
        Decay rates of the two moments, each in [0, 1).
    eps : float
        Added to the denominator, >= 0.
    weight_decay : float
        L2 penalty added to the gradient (not decoupled), >= 0.
    """

    _hyper = {"lr": _float, "betas": _pair, "eps": _float, "weight_decay": _float}
    _slots = ("step", "exp_avg", "exp_avg_sq")

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ValueError(f"betas must be a pair of floats, got {betas!r}")
        super().__init__(params, lr=lr, betas=(float(betas[0]), float(betas[1])), eps=eps,
                         weight_decay=weight_decay)

    def _check_hyper(self, h):
        _check_number(h, "lr")
        _check_number(h, "eps")
        _check_number(h, "weight_decay")
        for i, beta in enumerate(h["betas"]):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {beta} (must be in [0, 1))")

    def _slot_shape(self, slot, p):
        return () if slot == "step" else p.shape

    def _slot_dtype(self, slot, p):
        return np.dtype(np.int64) if slot == "step" else p.dtype

    def _update(self, name, p, g):
        beta1, beta2 = self.betas
        slots = self.state.get(name)
        if slots is None:
            slots = self.state[name] = {"step": np.array(0, dtype=np.int64),
                                        "exp_avg": np.zeros_like(p),
                                        "exp_avg_sq": np.zeros_like(p)}
        slots["step"] += 1
        d = g + self.weight_decay * p if self.weight_decay != 0 else g
        m, v = slots["exp_avg"], slots["exp_avg_sq"]
        _lerp_(m, d, 1 - beta1)
        v *= beta2
        # Operand order as in torch's addcmul (value * t1 * t2) and addcdiv
        # (value * t1 / t2) kernels.
        v += (1 - beta2) * d * d
        # torch takes the step count as a Python float for the bias corrections.
        t = float(slots["step"])
        step_size = self.lr / (1 - beta1 ** t)
        denom = np.sqrt(v) / (1 - beta2 ** t) ** 0.5
        denom += self.eps
        p += -step_size * m / denom


def _lerp_(a: np.ndarray, b: np.ndarray, w: float) -> None:
    r"""In-place :math:`a \leftarrow a + w (b - a)`, in torch.lerp's two forms.

    torch switches to :math:`b - (b - a)(1 - w)` for :math:`|w| \ge 1/2` to
    keep the end point exact; copying the switch copies its rounding.
    """
    if abs(w) < 0.5:
        a += w * (b - a)
    else:
        a[...] = b - (b - a) * (1 - w)


class MultiStepLR:
    r"""Multiply the optimiser's lr by gamma at each milestone epoch, as PyTorch.

    After e calls of ``step()`` (one per finished epoch),

    .. math::
        \eta_e = \eta_0 \, \gamma^{\,|\{m \in \text{milestones} : m \le e\}|}

    (a milestone listed twice counts twice). Like torch's ``step()``, the
    decay is applied to the optimiser's current lr when an epoch reaches a
    milestone, so the rounding equals torch's.

    Parameters
    ----------
    optimizer : Optimizer
        Its ``lr`` attribute is changed.
    milestones : iterable of int
        Epoch counts (>= 1) after which lr decays.
    gamma : float
        Decay factor, > 0.
    """

    def __init__(self, optimizer: Optimizer, milestones: Iterable[int], gamma: float = 0.1) -> None:
        if not hasattr(optimizer, "lr"):
            raise TypeError(f"MultiStepLR: expected an optimizer with an 'lr' attribute, "
                            f"got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.milestones = self._check_milestones(milestones)
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float, np.integer, np.floating)) \
                or not (math.isfinite(gamma) and gamma > 0):
            raise ValueError(f"MultiStepLR: gamma must be a finite number > 0, got {gamma!r}")
        self.gamma = float(gamma)
        self.base_lr = float(optimizer.lr)
        self.last_epoch = 0
        self.last_lr = self.base_lr

    @staticmethod
    def _check_milestones(milestones) -> Tuple[int, ...]:
        ms = tuple(milestones)
        for m in ms:
            if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
                raise ValueError(f"MultiStepLR: milestones must be integers >= 1, got {ms}")
        return tuple(sorted(int(m) for m in ms))

    def step(self) -> None:
        """Call once at the end of each epoch."""
        self.last_epoch += 1
        count = self.milestones.count(self.last_epoch)
        if count:
            self.optimizer.lr = self.optimizer.lr * self.gamma ** count
        self.last_lr = float(self.optimizer.lr)

    def closed_form_lr(self, epoch: int) -> float:
        """The learning rate after ``epoch`` steps, from the formula above."""
        return self.base_lr * self.gamma ** bisect.bisect_right(self.milestones, epoch)

    def get_last_lr(self) -> float:
        return self.last_lr

    _keys = ("last_epoch", "base_lr", "last_lr", "gamma", "milestones")

    def state_dict(self) -> Dict[str, np.ndarray]:
        """Flat dict of arrays; the lr itself lives in the optimiser's state dict."""
        return {"last_epoch": np.array(self.last_epoch, dtype=np.int64),
                "base_lr": np.array(self.base_lr), "last_lr": np.array(self.last_lr),
                "gamma": np.array(self.gamma),
                "milestones": np.array(self.milestones, dtype=np.int64)}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        missing = sorted(set(self._keys) - set(state))
        unknown = sorted(set(state) - set(self._keys))
        if missing or unknown:
            raise KeyError(f"MultiStepLR: state dict does not match; missing keys {missing}, "
                           f"unknown keys {unknown}")
        milestones = np.asarray(state["milestones"])
        if milestones.ndim != 1:
            raise ValueError(f"MultiStepLR: 'milestones' must be 1-d, got shape {milestones.shape}")
        last_epoch = int(_scalar(state["last_epoch"], "last_epoch"))
        if last_epoch < 0:
            raise ValueError(f"MultiStepLR: 'last_epoch' must be >= 0, got {last_epoch}")
        self.milestones = self._check_milestones(int(m) for m in milestones)
        self.last_epoch = last_epoch
        self.base_lr = _float(state["base_lr"], "base_lr")
        self.last_lr = _float(state["last_lr"], "last_lr")
        self.gamma = _float(state["gamma"], "gamma")
