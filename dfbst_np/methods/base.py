r"""What a method is: a :class:`Method` (name, paper, defaults) and its
:class:`Implementation`\ s (the hooks), plus the model-wide :class:`Settings`.

A method has two implementations with one set of hooks: ``fast`` and
``textbook``. A masked layer and the Trainer are handed one implementation
object when they are made and call only its hooks; nobody outside
:mod:`dfbst_np.methods` asks which method it is. docs/SPEC.md ("Method
hooks") lists every hook with its signature; the defaults below are what a
method that does not override a hook gets (no extra loss term, no backward
mask, no topology update, no state to save).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, NamedTuple, Optional, Tuple

import numpy as np

from ..sparse.ledger import LayerCost
from ..sparse.step import ESTIMATORS, get_estimator

#: The model-wide weight-gradient settings a user chooses (see :class:`Settings`).
WEIGHT_GRADS = ("exact", "predicted")
#: What a layer's backward can compute for A = dL/dW_hat in one step:
#: "exact" every entry; "mask" the entries of M only (a sampled product);
#: "predicted" the entries of M | D_prev (DFBST's accelerated approximation).
WEIGHT_GRAD_MODES = ("exact", "mask", "predicted")


@dataclass(frozen=True)
class Settings:
    """Model-wide settings, made once (by ``models.build`` or a layer) and shared by its layers.

    estimator : name of the straight-through estimator h (``sparse.step.ESTIMATORS``).
    float32_masks : round every gradient that reaches a mask to float32, as
        the reference's float32 masks do (SPEC "Float32 masks in the reference").
    weight_grad : "exact" (the paper's algorithm) or "predicted" (DFBST's
        accelerated approximation; only for methods that list it).
    """
    estimator: str = "long_tailed"
    float32_masks: bool = False
    weight_grad: str = "exact"

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {self.estimator!r}; expected one of "
                             f"{sorted(ESTIMATORS)}")
        if self.weight_grad not in WEIGHT_GRADS:
            raise ValueError(f"unknown weight_grad {self.weight_grad!r}; expected one of "
                             f"{WEIGHT_GRADS}")
        object.__setattr__(self, "float32_masks", bool(self.float32_masks))

    @property
    def h(self):
        """The estimator function."""
        return get_estimator(self.estimator)


class StepPlan(NamedTuple):
    """What a trainer asks of a layer for its next forward and backward.

    input_grad : compute dL/dx (False for the layer that reads the network's input).
    weight_grad : one of :data:`WEIGHT_GRAD_MODES`, or None for the
        implementation's default under the layer's settings.
    deferred : the trainer writes the weight gradient it uses itself
        (``set_used_grad``), so a gradient on a support need not be written densely.
    """
    input_grad: bool = True
    weight_grad: Optional[str] = None
    deferred: bool = False


class StepInfo(NamedTuple):
    """Where a training step is, as the trainer-level hooks see it.

    epoch counts from 1, index is the batch index in the epoch; step counts
    steps from 0 over the run: (epoch - 1) * steps_per_epoch + index when the
    trainer knows its steps per epoch, else the steps this trainer took;
    total is the run's number of steps, or None when unknown.
    """
    epoch: int
    index: int
    step: int
    total: Optional[int]


class Backward(NamedTuple):
    """What a layer hook ``backward`` returns.

    dx2 : dL/dX2 (or its transpose, in the transposed layout), or None when
        the plan asked for no input gradient.
    dW : the loss gradient of W (before any gradient mask), an
        :class:`~dfbst_np.sparse.entries.Entries` (every entry, or a support's).
    grads : gradients of the method's own parameters, e.g. {"threshold": dt}.
    mode : the weight-gradient mode actually computed ("exact", "mask", "predicted").
    """
    dx2: Optional[np.ndarray]
    dW: object
    grads: Dict[str, np.ndarray]
    mode: str


class Implementation:
    """One implementation (``kind`` "fast" or "textbook") of a method's hooks.

    Layer hooks (``layer`` is the calling MaskedLinear or MaskedConv2d; its
    public attributes are ``weight2d``, ``params``, ``settings``, ``training``,
    ``kernel_path``, ``rng``, ``state``, ``backward_mask``):

    * ``new_state(layer)`` -> the layer's per-step scratch and method state;
    * ``forward(layer, x2, transposed, plan)`` -> Y2 (or Y2^T);
    * ``backward(layer, dy2, x2, transposed, plan)`` -> :class:`Backward`;
    * ``mask(layer)`` -> M of the last forward as W-shaped 0/1 in W's dtype, or None;
    * ``mask_nnz(layer)`` -> nnz(M) of the last forward (numel when unmasked).

    Trainer hooks (``layers`` is the list of (dotted name, layer); ``trainer``
    gives ``layers``, ``optimizer``, ``alpha``, ``beta``, ``method_state``):
    see the methods of this class.
    """

    kind = "fast"
    method = None        # the Method this implementation belongs to (set by Method)

    # -- layers --------------------------------------------------------------
    def default_weight_grad(self, settings: Settings) -> str:
        """The weight-gradient mode of a step whose plan does not choose one."""
        return "exact"

    def new_state(self, layer):  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, layer, x2: np.ndarray, transposed: bool, plan: StepPlan):  # pragma: no cover
        raise NotImplementedError

    def backward(self, layer, dy2: np.ndarray, x2: np.ndarray, transposed: bool,
                 plan: StepPlan) -> Backward:  # pragma: no cover - abstract
        raise NotImplementedError

    def mask(self, layer) -> Optional[np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def mask_nnz(self, layer) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- the model -------------------------------------------------------------
    def setup(self, layers) -> None:
        """Once per model, after its layers exist (``models.build`` and the Trainer
        call it; it must leave layers already set up as they are): e.g. a mask
        per layer from per-layer densities. Default: nothing."""

    # -- the trainer -------------------------------------------------------------
    def new_run_state(self):
        """The trainer's per-run state of this method (``trainer.method_state``)."""
        return None

    def step_weight_grad(self, trainer, info: StepInfo) -> Optional[str]:
        """The weight-gradient mode of this step for every layer (None: each layer's default)."""
        return None

    def alpha_term(self, trainer) -> float:
        """A loss term on the method's parameters: add its gradient to the layers'
        (``layer.set_grad``) and return its value. Default: none (0.0)."""
        return 0.0

    def beta_term(self, trainer, info: StepInfo) -> float:
        """A loss term carried from the previous step (DFBST's beta * V_prev). Default: 0.0."""
        return 0.0

    def gradient_mask(self, trainer) -> Optional[Dict[str, object]]:
        """After the loss gradient: mask the weight gradients. Returns
        {"<layer>.weight": Entries} to use instead of the layers' loss gradients
        (and sets each layer's ``set_backward_mask``), or None to use them as they are."""
        return None

    def statistic(self, trainer) -> Optional[float]:
        """The step's V (None when the method has none)."""
        return None

    def after_update(self, trainer, info: StepInfo) -> None:
        """After the optimiser step: a topology update (prune, regrow), if the method
        has one at this step. Pruned weights and their momentum must be set to 0
        (``optimizer.zero_entries``). Default: nothing."""

    def end_epoch(self, trainer, epoch: int) -> None:
        """After the last step of ``epoch`` (before the learning-rate schedule moves)."""

    def layer_cost(self, name: str, layer) -> LayerCost:
        """Training FLOPs of one layer's last step (SPEC "Cost accounting")."""
        numel = layer.weight.size
        nnz_d = layer.dmask_nnz
        return LayerCost(name=name, n=layer.rows, numel=numel, nnz_m=layer.mask_nnz,
                         nnz_d=numel if nnz_d is None else nnz_d)

    def state_dict(self, trainer) -> Dict[str, np.ndarray]:
        """The method's state a checkpoint must hold to resume exactly (masks, step
        counters, rng state), as flat {key: ndarray}. Default: none."""
        return {}

    def load_state_dict(self, trainer, arrays: Mapping[str, np.ndarray]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def __repr__(self) -> str:
        name = self.method.name if self.method is not None else "?"
        return f"<{self.kind} implementation of {name!r}>"


class Method:
    """A sparse-training method: its name, paper, defaults and two implementations.

    Parameters
    ----------
    name : the registry's key (``methods.get(name)``).
    title : how figures and tables name it (default: the name in capitals).
    paper : the reference, as a reader cites it.
    defaults : the run settings of the method's reference setup
        ({RunConfig field: value}); fields absent keep RunConfig's defaults.
    fast, textbook : :class:`Implementation` objects with the same hooks.
    params : the method's per-layer parameters, each an (out,) vector that
        starts at 0, in registration order (e.g. ("threshold", "dthreshold")).
    weight_grads : the :data:`WEIGHT_GRADS` settings the method accepts.
    masked : whether the layers have a forward mask.
    threshold_mask : whether that mask is SPEC section 1's threshold rule
        M = H(|W| - tau) with a learned per-row ``threshold`` t and the reset
        rule (what the textbook's and the PyTorch reference's rules compute).
    abs_threshold : with the threshold rule, tau = |t| and s(t) = d tau/dt =
        sign(t) (1 at 0), as DFBST; else tau = t and s = 1, as DST.
    learns_backward_mask : whether the method learns DFBST's backward mask
        D = H(|Ghat| - u) on the weight gradients, with u its ``dthreshold``.

    The last three describe the rules the textbook, the fast path and the
    reference share, so that they ask the method rather than its name.
    """

    def __init__(self, name: str, paper: str, fast: Implementation, textbook: Implementation,
                 title: Optional[str] = None, defaults: Optional[Mapping] = None, params: Tuple[str, ...] = (),
                 weight_grads: Tuple[str, ...] = ("exact",), masked: bool = True,
                 threshold_mask: bool = False, abs_threshold: bool = False,
                 learns_backward_mask: bool = False, doc: str = "") -> None:
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"Method: a name must be a Python identifier, got {name!r}")
        for flag, on, needs, ok in (
                ("threshold_mask", threshold_mask, "parameter 'threshold'", "threshold" in params),
                ("threshold_mask", threshold_mask, "masked=True", masked),
                ("abs_threshold", abs_threshold, "threshold_mask=True", threshold_mask),
                ("learns_backward_mask", learns_backward_mask, "parameter 'dthreshold'",
                 "dthreshold" in params)):
            if on and not ok:
                raise ValueError(f"Method {name!r}: {flag}=True needs {needs}")
        for impl, kind in ((fast, "fast"), (textbook, "textbook")):
            if not isinstance(impl, Implementation):
                raise TypeError(f"Method {name!r}: {kind} must be an Implementation, "
                                f"got {type(impl).__name__}")
            if impl.method is not None and impl.method is not self:
                raise ValueError(f"Method {name!r}: its {kind} implementation already "
                                 f"belongs to {impl.method.name!r}")
            impl.kind, impl.method = kind, self
        self.name, self.paper, self.doc = name, paper, doc
        self.title = name.upper() if title is None else title
        self.fast, self.textbook = fast, textbook
        self.defaults = dict(defaults or {})
        self.params = tuple(params)
        self.weight_grads = tuple(weight_grads)
        self.masked = bool(masked)
        self.threshold_mask = bool(threshold_mask)
        self.abs_threshold = bool(abs_threshold)
        self.learns_backward_mask = bool(learns_backward_mask)

    def implementation(self, kind: str = "fast") -> Implementation:
        """The ``"fast"`` or ``"textbook"`` implementation."""
        if kind == "fast":
            return self.fast
        if kind == "textbook":
            return self.textbook
        raise ValueError(f"method {self.name!r}: unknown implementation {kind!r}; "
                         f"expected 'fast' or 'textbook'")

    def layer_params(self, out: int, dtype) -> Dict[str, np.ndarray]:
        """The method's parameters of a layer with ``out`` output units, at 0."""
        return {name: np.zeros(out, dtype=dtype) for name in self.params}

    def __repr__(self) -> str:
        return f"<method {self.name!r}: {self.paper}>"
