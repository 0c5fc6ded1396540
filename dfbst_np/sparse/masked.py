r"""MaskedLinear and MaskedConv2d: an engine layer plus the mask rule.

The engine's Linear and Conv2d route their weight through two hooks,
``_weight_product`` (forward) and ``_weight_product_backward``. A masked
layer overrides exactly those two, so the rule below is written once for
both layer kinds: a conv weight is the (out, in*kh*kw) matrix W here.

Forward:   M = H(|W| - tau),  W_hat = W * M,  Y2 = X2 W_hat^T   (sparse kernel)
Backward:  A = dY2^T X2,  dX2 = dY2 W_hat,  (dW, dt) = masked_layer_grads(A, ...)

``method="dense"`` is the plain engine layer: no threshold, no mask.
"""
from __future__ import annotations

import numpy as np

from ..nn.linear import Conv2d, Linear
from . import kernels
from .mask_rule import forward_mask, masked_layer_grads
from .step import get_estimator

METHODS = ("dense", "dst", "dfbst")


class MaskedLayer:
    """The mask rule, mixed into Linear and Conv2d (see the module docstring).

    Attributes
    ----------
    method : "dense", "dst" or "dfbst".
    mask : M of the last forward, shaped like W (None for dense).
    dmask : D of the last backward mask, shaped like W (set by the trainer).
    kernel_path : "dense", "sparse", "auto" or None (None: the global default).
    rows : rows of X2 in the last forward (batch, times positions for conv),
        the N of the cost ledger.
    """

    def _init_mask(self, method: str, estimator: str, float32_masks: bool, kernel_path) -> None:
        if method not in METHODS:
            raise ValueError(f"{type(self).__name__}: unknown method {method!r}; "
                             f"expected one of {METHODS}")
        self.method = method
        self.estimator = get_estimator(estimator)
        self.float32_masks = bool(float32_masks)
        self.kernel_path = kernel_path
        out = self._params["weight"].shape[0]
        if method in ("dst", "dfbst"):
            self._params["threshold"] = np.zeros(out, dtype=self.dtype)
        if method == "dfbst":
            self._params["dthreshold"] = np.zeros(out, dtype=self.dtype)
        self.mask = self.dmask = None
        self.rows = 0
        self._fmask = self._kernel = None

    def _weight_product(self, x2: np.ndarray) -> np.ndarray:
        """Y2 = X2 W_hat^T with W_hat = W * M; keeps M and the kernel for the backward."""
        self.rows = x2.shape[0]
        if self.method == "dense":
            return super()._weight_product(x2)
        self._product_input = x2
        w2 = self.weight2d
        self._fmask = forward_mask(w2, self._params["threshold"], self.method)
        self.mask = self._fmask.M.reshape(self.weight.shape)
        self._kernel = kernels.prepare_weight(w2 * self._fmask.M, path=self.kernel_path)
        return self._kernel.forward(x2)

    def _weight_product_backward(self, dy2: np.ndarray) -> np.ndarray:
        """dX2 = dY2 W_hat; grads of weight and threshold from A = dY2^T X2."""
        if self.method == "dense":
            return super()._weight_product_backward(dy2)
        # The exact algorithm needs the dense A: D is defined by dW's row sums.
        A = dy2.T @ self._product_input
        dx2 = self._kernel.backward_data(dy2)
        dW, dt = masked_layer_grads(A, self.weight2d, self._params["threshold"], self._fmask,
                                    self.method, self.estimator, self.float32_masks)
        self._grads["weight"] = dW.reshape(self.weight.shape)
        self._grads["threshold"] = dt
        self._product_input = self._kernel = None
        return dx2

    @property
    def density(self) -> float:
        """Fraction of weights the last forward used (1.0 for dense)."""
        return 1.0 if self.mask is None else float(self.mask.mean())


class MaskedLinear(MaskedLayer, Linear):
    """A linear layer with a learned forward mask (and, for dfbst, a backward threshold).

    Shapes: x (N, in), W (out, in), b (out,), t and u (out,), y (N, out).
    Parameters, in PyTorch's registration order: weight, bias, threshold (dst,
    dfbst), dthreshold (dfbst).
    """

    def __init__(self, in_features: int, out_features: int, method: str = "dfbst",
                 bias: bool = True, dtype=np.float32, rng=None, estimator: str = "long_tailed",
                 float32_masks: bool = False, kernel_path=None) -> None:
        Linear.__init__(self, in_features, out_features, bias=bias, dtype=dtype, rng=rng)
        self._init_mask(method, estimator, float32_masks, kernel_path)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", method={self.method!r}"


class MaskedConv2d(MaskedLayer, Conv2d):
    """A 2-D convolution with the same mask rule, on W as an (out, in*kh*kw) matrix.

    Shapes: x (N, C_in, H, W), W (C_out, C_in, kh, kw), t and u (C_out,),
    y (N, C_out, OH, OW).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride: int = 1,
                 padding: int = 0, bias: bool = True, method: str = "dfbst", dtype=np.float32,
                 rng=None, estimator: str = "long_tailed", float32_masks: bool = False,
                 kernel_path=None) -> None:
        Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride=stride,
                        padding=padding, bias=bias, dtype=dtype, rng=rng)
        self._init_mask(method, estimator, float32_masks, kernel_path)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", method={self.method!r}"


def masked_layers(model):
    """(dotted name, layer) for every masked layer of ``model``, in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, MaskedLayer)]
