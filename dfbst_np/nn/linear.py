"""Fully connected and convolutional layers: one weight product, two shapes.

Both layers reduce to the same product on a 2-D matrix of inputs,

.. math::
    Y_2 = X_2 W_2^\\top + b, \\qquad W_2 = W.\\mathrm{reshape}(\\mathrm{out}, -1),

with ``X2 = x`` for a linear layer and ``X2 = im2col(x)`` for a convolution.
A convolution runs it transposed, :math:`Y_2^\\top = W_2 X_2^\\top`, on the
layout of :mod:`dfbst_np.nn.fast_im2col` (one column per output position:
cheaper copies, and sparse products without transposes); the textbook
:mod:`dfbst_np.nn.im2col` gives the same numbers for reading.
The product lives in two small hook methods, ``_weight_product`` and
``_weight_product_backward``; the masked layers of ``dfbst_np.sparse``
override exactly those two and nothing else.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

from .checks import check_arguments, check_grad_output, check_input
from .fast_im2col import BATCH_LAST_BELOW, col2im_t, from_output, im2col_t, to_output
from .im2col import conv_output_size
from .init import as_float_dtype, as_rng, bias_uniform, fan_in, kaiming_uniform
from .module import Module
from ..runtime import matmul


class WeightLayer(Module):
    """Holds ``weight`` (PyTorch layout) and optional ``bias``; owns the product hooks."""

    def __init__(self, weight_shape: Tuple[int, ...], bias: bool, dtype, rng) -> None:
        super().__init__()
        self.dtype = as_float_dtype(dtype, type(self).__name__)
        rng = as_rng(rng)
        self._params["weight"] = kaiming_uniform(weight_shape, rng, self.dtype)
        if bias:
            self._params["bias"] = bias_uniform(weight_shape[0], fan_in(weight_shape), rng, self.dtype)
        self._product_input, self._transposed = None, False

    @property
    def weight(self) -> np.ndarray:
        return self._params["weight"]

    @property
    def weight2d(self) -> np.ndarray:
        """W as the (out, fan_in) matrix the product uses (a view)."""
        w = self._params["weight"]
        return w.reshape(w.shape[0], -1)

    def _weight_product(self, x2: np.ndarray, transposed: bool = False) -> np.ndarray:
        r"""Forward product, (rows, fan_in) -> (rows, out); transposed: X2^T (fan_in, rows)
        -> Y2^T (out, rows).

        .. math:: Y_2 = X_2 W_2^\top, \qquad Y_2^\top = W_2 X_2^\top
        """
        self._product_input, self._transposed = x2, transposed
        return matmul(self.weight2d, x2) if transposed else matmul(x2, self.weight2d.T)

    def _weight_product_backward(self, dy2: np.ndarray):
        r"""Backward product: sets ``grads["weight"]``, returns dX2 in the forward's
        layout (or None: a masked layer told that no input gradient is needed).

        .. math:: \frac{\partial L}{\partial W_2} = dY_2^\top X_2, \qquad dX_2 = dY_2 W_2
        """
        x2, w2 = self._product_input, self.weight2d
        self._product_input = None
        if self._transposed:
            self._grads["weight"] = matmul(dy2, x2.T).reshape(self.weight.shape)
            return matmul(w2.T, dy2)
        self._grads["weight"] = matmul(dy2.T, x2).reshape(self.weight.shape)
        return matmul(dy2, w2)


def _zeros_view(shape, dtype) -> np.ndarray:
    """A read-only array of zeros that costs no memory (what a skipped dx returns)."""
    return np.broadcast_to(np.zeros((), dtype=dtype), shape)


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
        return _zeros_view((dy.shape[0], self.in_features), self.dtype) if dx is None else dx

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={'bias' in self._params}"


@dataclass
class Conv2dCache:
    """What Conv2d.forward keeps for the backward (and the position order it used)."""
    x_shape: Tuple[int, int, int, int]
    y_shape: Tuple[int, int, int, int]
    batch_last: bool = False


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
        """x (N, C_in, H, W) -> y (N, C_out, OH, OW), in the transposed layout of
        :mod:`dfbst_np.nn.fast_im2col` (positions batch last when OW is small)."""
        check_input(self, x, (4,), self.dtype, {1: self.in_channels})
        n, _, oh, ow = y_shape = self.output_shape(x.shape)
        if oh <= 0 or ow <= 0:
            raise ValueError(f"{self.describe()}: input {x.shape} is smaller than the kernel "
                             f"{self.kernel_size} with padding {self.padding}")
        batch_last = ow < BATCH_LAST_BELOW
        cols_t = im2col_t(x, *self.kernel_size, self.stride, self.padding, batch_last)  # (C*kh*kw, N*OH*OW)
        y2t = self._weight_product(cols_t, transposed=True)                              # (C_out, N*OH*OW)
        if "bias" in self._params:
            y2t += self._params["bias"][:, None]
        self._cache = Conv2dCache(x_shape=x.shape, y_shape=y_shape, batch_last=batch_last)
        return to_output(y2t, n, oh, ow, batch_last)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dy (N, C_out, OH, OW) -> dx (N, C_in, H, W); fills grads "weight" and "bias".

        When the product hook returns no input gradient (a masked layer told
        that nothing needs it), neither col2im nor dx is computed and a
        read-only view of zeros is returned.
        """
        check_grad_output(self, dy)
        cache = self._cache
        dy2t = from_output(dy, cache.batch_last)                                 # (C_out, N*OH*OW)
        if "bias" in self._params:
            # a matrix-vector product with ones: 4x faster than dy2t.sum(axis=1)
            self._grads["bias"] = dy2t @ np.ones(dy2t.shape[1], dtype=dy2t.dtype)
        dcols_t = self._weight_product_backward(dy2t)
        self._cache = None
        if dcols_t is None:
            return _zeros_view(cache.x_shape, self.dtype)
        return col2im_t(dcols_t, cache.x_shape, *self.kernel_size, self.stride, self.padding,
                        cache.batch_last)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={'bias' in self._params}")
