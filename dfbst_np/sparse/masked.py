r"""MaskedLinear and MaskedConv2d: an engine layer plus a method's hooks.

The engine's Linear and Conv2d route their weight through two hooks,
``_weight_product`` (forward) and ``_weight_product_backward``. A masked
layer overrides exactly those two and hands them to the implementation
object it was given when made (``dfbst_np.methods``: the fast or the
textbook implementation of ``dense``, ``dst``, ``dfbst``, ...), so the rule
is written once for both layer kinds: a conv weight is the (out, in*kh*kw)
matrix W here.

Forward:   M from the method,  W_hat = W * M,  Y2 = X2 W_hat^T
Backward:  A = dY2^T X2,  dX2 = dY2 W_hat,  (dW, dt, ...) = the method's gradient rule

The layer holds what is the same for every method: W, b, the method's
parameters (t, u for dfbst), the model-wide :class:`~dfbst_np.methods.Settings`
(estimator, float32 masks, weight-gradient mode), the backward mask D a
trainer recorded, and the per-step API below. Nothing sets a mode on it
after it is made: a trainer describes one step with :meth:`MaskedLayer.next_step`.
How each implementation computes (CSR kernels, the predicted weight gradient,
the textbook's dense products) is documented in :mod:`dfbst_np.methods.fast`
and :mod:`dfbst_np.methods.textbook_rule`.
"""
from __future__ import annotations


import numpy as np

from .. import methods as _methods
from ..methods.base import Settings, StepPlan
from ..nn.init import as_rng
from ..nn.linear import Conv2d, Linear
from . import kernels
from .entries import Entries, Pattern


def _settings(settings, estimator, float32_masks, weight_grad) -> Settings:
    """The layer's model-wide settings: given, or made from the layer's own arguments."""
    if settings is None:
        return Settings(estimator=estimator, float32_masks=float32_masks, weight_grad=weight_grad)
    if not isinstance(settings, Settings):
        raise TypeError(f"settings must be a dfbst_np.methods.Settings, got {type(settings).__name__}")
    return settings


class MaskedLayer:
    """A method's hooks, mixed into Linear and Conv2d (see the module docstring).

    Attributes
    ----------
    impl : the implementation object whose hooks the layer calls.
    method : the method's name (``impl.method.name``).
    settings : the model-wide :class:`~dfbst_np.methods.Settings`.
    rng : the Generator the layer was initialised from (a method may draw from it).
    state : the implementation's per-layer state (its own business).
    mask : M of the last forward, shaped like W, in W's dtype (None for dense).
    dmask : D of the last backward mask, shaped like W, in W's dtype (made
        from :attr:`backward_mask` when read; assigning an array sets it).
    backward_mask : D as a :class:`~dfbst_np.sparse.entries.Pattern`, or None.
    kernel_path : "dense", "sparse", "auto" or None (None: the global default).
    rows : rows of X2 in the last forward (batch, times positions for conv),
        the N of the cost ledger.
    last_weight_grad : the weight-gradient mode the last backward computed
        ("exact", "mask" or "predicted").

    Per step, a trainer calls :meth:`next_step` (what the step needs),
    ``forward``, ``backward``, then :meth:`loss_grad` (dW before D),
    :meth:`set_backward_mask` (D) and :meth:`set_used_grad` (dW * D after clipping).
    """

    def _init_mask(self, method, impl, settings, kernel_path, rng) -> None:
        if impl is None or isinstance(impl, str):      # "fast" or "textbook" of ``method``
            self.impl = _methods.implementation(method, impl or "fast")
        else:                                          # an implementation object
            self.impl = _methods.implementation(impl)
        spec = self.impl.method
        self.method = spec.name
        self.settings = settings
        if settings.weight_grad not in spec.weight_grads:
            raise ValueError(f"{type(self).__name__}: weight_grad={settings.weight_grad!r} is not "
                             f"available for method {spec.name!r} (it accepts {spec.weight_grads})")
        if kernel_path is not None and kernel_path not in kernels.PATHS:    # fail here, not in forward
            raise ValueError(f"{type(self).__name__}: kernel_path must be one of {kernels.PATHS} "
                             f"or None, got {kernel_path!r}")
        self.kernel_path = kernel_path
        self.rng = rng
        for name, value in spec.layer_params(self._params["weight"].shape[0], self.dtype).items():
            self._params[name] = value
        self._dpattern = None
        self.rows = 0
        self.last_weight_grad = None
        self._plan = self._step_plan = None
        self._loss_grad = None
        self.state = self.impl.new_state(self)

    @property
    def float32_masks(self) -> bool:
        return self.settings.float32_masks

    @property
    def weight_grad(self) -> str:
        return self.settings.weight_grad

    # -- the per-step interface of a trainer ----------------------------------
    def next_step(self, input_grad: bool = True, weight_grad=None, deferred: bool = False) -> None:
        """Describe the next forward and backward (they alone; afterwards the defaults
        hold again): whether dL/dx is needed, the weight-gradient mode (None: the
        implementation's default), and whether the trainer writes the used weight
        gradient itself (:meth:`set_used_grad`)."""
        if weight_grad is not None and weight_grad not in _methods.WEIGHT_GRAD_MODES:
            raise ValueError(f"{self.describe()}: unknown weight-gradient mode {weight_grad!r}; "
                             f"expected one of {_methods.WEIGHT_GRAD_MODES}")
        self._plan = StepPlan(bool(input_grad), weight_grad, bool(deferred))

    def loss_grad(self) -> Entries:
        """dL/dW of the last backward, before D, as (out, fan_in)
        :class:`~dfbst_np.sparse.entries.Entries`: the whole matrix (exact mode)
        or its values on a support (0 elsewhere)."""
        if self._loss_grad is None:
            raise RuntimeError(f"{self.describe()}: no weight gradient: call backward first")
        return self._loss_grad

    def set_backward_mask(self, D) -> None:
        """Record D of this step: a :class:`~dfbst_np.sparse.entries.Pattern`, or None."""
        if D is not None and not isinstance(D, Pattern):
            raise TypeError(f"{self.describe()}: set_backward_mask takes a Pattern or None, "
                            f"got {type(D).__name__}")
        self._dpattern = D

    def set_used_grad(self, g: Entries) -> None:
        """The weight gradient the optimiser applies (dW * D, clipped), written densely."""
        self._grads["weight"] = g.dense().reshape(self.weight.shape)

    # -- masks as attributes -------------------------------------------------
    @property
    def mask(self):
        return self.impl.mask(self)

    @property
    def backward_mask(self):
        """D of the last backward mask as a Pattern, or None."""
        return self._dpattern

    @property
    def dmask(self):
        if self._dpattern is None:
            return None
        return self._dpattern.dense(self.dtype).reshape(self.weight.shape)

    @dmask.setter
    def dmask(self, value) -> None:
        self._dpattern = None if value is None else Pattern(keep=np.asarray(value).reshape(
            np.shape(value)[0], -1) != 0)

    @property
    def density(self) -> float:
        """Fraction of weights the last forward used (1.0 for dense)."""
        return self.mask_nnz / self.weight.size

    @property
    def mask_nnz(self) -> int:
        """nnz(M) of the last forward (numel for dense)."""
        return self.impl.mask_nnz(self)

    @property
    def dmask_nnz(self):
        """nnz(D) of the last backward mask, or None when there is none."""
        return None if self._dpattern is None else self._dpattern.nnz

    @property
    def bdensity(self) -> float:
        """Fraction of the weight gradient the last backward mask kept (1.0 without one)."""
        nnz = self.dmask_nnz
        return 1.0 if nnz is None else nnz / self.weight.size

    # -- forward and backward: the implementation's hooks ----------------------
    def _weight_product(self, x2: np.ndarray, transposed: bool = False) -> np.ndarray:
        """Y2 = X2 W_hat^T (or Y2^T = W_hat X2^T), by the implementation's ``forward``."""
        self.rows = x2.shape[1] if transposed else x2.shape[0]
        self._product_input, self._transposed = x2, transposed
        plan, self._plan = self._plan or StepPlan(), None
        self._step_plan = plan
        return self.impl.forward(self, x2, transposed, plan)

    def _weight_product_backward(self, dy2: np.ndarray):
        """dX2 = dY2 W_hat (None when the step needs no input gradient); the
        gradients of W and of the method's parameters, by the implementation's ``backward``."""
        x2, tr = self._product_input, self._transposed
        plan, self._step_plan = self._step_plan or StepPlan(), None
        self._product_input = None
        out = self.impl.backward(self, dy2, x2, tr, plan)
        self._loss_grad = out.dW
        if out.dW.full or not plan.deferred:
            self._grads["weight"] = out.dW.dense().reshape(self.weight.shape)
        else:
            self._grads.pop("weight", None)
        self._grads.update(out.grads)
        self.last_weight_grad = out.mode
        return out.dx2

    def extra_repr(self) -> str:
        extra = f", weight_grad={self.weight_grad!r}" if self.weight_grad != "exact" else ""
        kind = f", impl={self.impl.kind!r}" if self.impl.kind != "fast" else ""
        return super().extra_repr() + f", method={self.method!r}" + extra + kind


class MaskedLinear(MaskedLayer, Linear):
    """A linear layer with a learned forward mask (and, for dfbst, a backward threshold).

    Shapes: x (N, in), W (out, in), b (out,), t and u (out,), y (N, out).
    Parameters, in PyTorch's registration order: weight, bias, threshold (dst,
    dfbst), dthreshold (dfbst): the method's, see :mod:`dfbst_np.methods`.

    ``method``: a registered name, a Method or an implementation object;
    ``impl``: "fast" (default) or "textbook" (or an implementation object);
    ``settings``: the model-wide :class:`~dfbst_np.methods.Settings` (else
    made from ``estimator``, ``float32_masks`` and ``weight_grad``).
    """

    def __init__(self, in_features: int, out_features: int, method="dfbst",
                 bias: bool = True, dtype=np.float32, rng=None, estimator: str = "long_tailed",
                 float32_masks: bool = False, kernel_path=None, weight_grad: str = "exact",
                 impl=None, settings: Settings = None) -> None:
        rng = as_rng(rng)
        Linear.__init__(self, in_features, out_features, bias=bias, dtype=dtype, rng=rng)
        self._init_mask(method, impl, _settings(settings, estimator, float32_masks, weight_grad),
                        kernel_path, rng)


class MaskedConv2d(MaskedLayer, Conv2d):
    """A 2-D convolution with the same mask rule, on W as an (out, in*kh*kw) matrix.

    Shapes: x (N, C_in, H, W), W (C_out, C_in, kh, kw), t and u (C_out,),
    y (N, C_out, OH, OW).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride: int = 1,
                 padding: int = 0, bias: bool = True, method="dfbst", dtype=np.float32,
                 rng=None, estimator: str = "long_tailed", float32_masks: bool = False,
                 kernel_path=None, weight_grad: str = "exact", impl=None,
                 settings: Settings = None) -> None:
        rng = as_rng(rng)
        Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride=stride,
                        padding=padding, bias=bias, dtype=dtype, rng=rng)
        self._init_mask(method, impl, _settings(settings, estimator, float32_masks, weight_grad),
                        kernel_path, rng)


def masked_layers(model):
    """(dotted name, layer) for every masked layer of ``model``, in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, MaskedLayer)]
