"""Fully connected and convolutional layers: one weight product, two shapes.

Both layers reduce to the same product on a 2-D matrix of inputs,

.. math::
    Y_2 = X_2 W_2^\\top + b, \\qquad W_2 = W.\\mathrm{reshape}(\\mathrm{out}, -1),

with ``X2 = x`` for a linear layer and ``X2 = im2col(x)`` for a convolution.
The product lives in two small hook methods, ``_weight_product`` and
``_weight_product_backward``; the masked layers of ``dfbst_np.sparse``
override exactly those two and nothing else.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

from .checks import check_arguments, check_grad_output, check_input
from .im2col import col2im, conv_output_size, im2col
from .init import as_float_dtype, as_rng, bias_uniform, fan_in, kaiming_uniform
from .module import Module


class WeightLayer(Module):
    """Holds ``weight`` (PyTorch layout) and optional ``bias``; owns the product hooks."""

    def __init__(self, weight_shape: Tuple[int, ...], bias: bool, dtype, rng) -> None:
        super().__init__()
        self.dtype = as_float_dtype(dtype, type(self).__name__)
        rng = as_rng(rng)
        self._params["weight"] = kaiming_uniform(weight_shape, rng, self.dtype)
        if bias:
            self._params["bias"] = bias_uniform(weight_shape[0], fan_in(weight_shape), rng, self.dtype)
        self._product_input = None

    @property
    def weight(self) -> np.ndarray:
        return self._params["weight"]

    @property
    def weight2d(self) -> np.ndarray:
        """W as the (out, fan_in) matrix the product uses (a view)."""
        w = self._params["weight"]
        return w.reshape(w.shape[0], -1)

    def _weight_product(self, x2: np.ndarray) -> np.ndarray:
        r"""Forward product, (rows, fan_in) -> (rows, out).

        .. math:: Y_2 = X_2 W_2^\top
        """
        self._product_input = x2
        return x2 @ self.weight2d.T

    def _weight_product_backward(self, dy2: np.ndarray) -> np.ndarray:
        r"""Backward product: sets ``grads["weight"]``, returns dX2 (rows, fan_in).

        .. math:: \frac{\partial L}{\partial W_2} = dY_2^\top X_2, \qquad dX_2 = dY_2 W_2
        """
        w = self._params["weight"]
        self._grads["weight"] = (dy2.T @ self._product_input).reshape(w.shape)
        self._product_input = None
        return dy2 @ self.weight2d


@dataclass
class LinearCache:
    """What Linear.forward keeps: only the output shape (X2 is kept by the product)."""
    y_shape: Tuple[int, int]


class Linear(WeightLayer):
    """y = x W^T + b.

    Shapes: x (N, in_features), W (out_features, in_features), b (out_features,),
    y (N, out_features).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 dtype=np.float32, rng=None) -> None:
        check_arguments(self, in_features=in_features, out_features=out_features)
        super().__init__((out_features, in_features), bias, dtype, rng)
        self.in_features, self.out_features = in_features, out_features

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (N, in) -> y (N, out)."""
        check_input(self, x, (2,), self.dtype, {1: self.in_features})
        y = self._weight_product(x)
        if "bias" in self._params:
            y += self._params["bias"]
        self._cache = LinearCache(y_shape=y.shape)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dy (N, out) -> dx (N, in); fills grads "weight" and "bias"."""
        check_grad_output(self, dy)
        if "bias" in self._params:
            self._grads["bias"] = dy.sum(axis=0)
        dx = self._weight_product_backward(dy)
        self._cache = None
        return dx

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={'bias' in self._params}"


@dataclass
class Conv2dCache:
    """What Conv2d.forward keeps for the backward."""
    x_shape: Tuple[int, int, int, int]
    y_shape: Tuple[int, int, int, int]


class Conv2d(WeightLayer):
    """2-D convolution (cross-correlation, as PyTorch) by im2col.

    Shapes: x (N, C_in, H, W), W (C_out, C_in, kh, kw), b (C_out,),
    y (N, C_out, OH, OW) with OH = (H + 2p - kh) // s + 1.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride: int = 1,
                 padding: int = 0, bias: bool = True, dtype=np.float32, rng=None) -> None:
        kh, kw = (kernel_size, kernel_size) if np.isscalar(kernel_size) else tuple(kernel_size)
        check_arguments(self, ("padding",), in_channels=in_channels, out_channels=out_channels,
                        kernel_size=(kh, kw), stride=stride, padding=padding)
        super().__init__((out_channels, in_channels, kh, kw), bias, dtype, rng)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = (kh, kw), int(stride), int(padding)

    def output_shape(self, x_shape):
        n, _, h, w = x_shape
        kh, kw = self.kernel_size
        return (n, self.out_channels, conv_output_size(h, kh, self.stride, self.padding),
                conv_output_size(w, kw, self.stride, self.padding))

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (N, C_in, H, W) -> y (N, C_out, OH, OW)."""
        check_input(self, x, (4,), self.dtype, {1: self.in_channels})
        n, _, oh, ow = y_shape = self.output_shape(x.shape)
        if oh <= 0 or ow <= 0:
            raise ValueError(f"{self.describe()}: input {x.shape} is smaller than the kernel "
                             f"{self.kernel_size} with padding {self.padding}")
        cols = im2col(x, *self.kernel_size, self.stride, self.padding)   # (N*OH*OW, C*kh*kw)
        y2 = self._weight_product(cols)                                   # (N*OH*OW, C_out)
        if "bias" in self._params:
            y2 += self._params["bias"]
        self._cache = Conv2dCache(x_shape=x.shape, y_shape=y_shape)
        return np.ascontiguousarray(y2.reshape(n, oh, ow, -1).transpose(0, 3, 1, 2))

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dy (N, C_out, OH, OW) -> dx (N, C_in, H, W); fills grads "weight" and "bias"."""
        check_grad_output(self, dy)
        dy2 = dy.transpose(0, 2, 3, 1).reshape(-1, self.out_channels)      # (N*OH*OW, C_out)
        if "bias" in self._params:
            self._grads["bias"] = dy2.sum(axis=0)
        dcols = self._weight_product_backward(dy2)
        dx = col2im(dcols, self._cache.x_shape, *self.kernel_size, self.stride, self.padding)
        self._cache = None
        return dx

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={'bias' in self._params}")
