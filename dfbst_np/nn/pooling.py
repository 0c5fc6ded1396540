"""Max and average pooling over (N, C, H, W), with PyTorch's semantics.

A window is read as one strided slice per kernel offset (i, j),
``xp[:, :, i : i + s*OH : s, j : j + s*OW : s]``, the same walk that
``col2im`` makes; nothing of size (N, C, OH, OW, kh, kw) is ever built.
The backward adds each offset's share back through the same slice, so
overlapping windows (3x3, stride 2) accumulate as they must.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Tuple

import numpy as np

from .checks import check_grad_output, check_input
from .im2col import conv_output_size
from .init import as_float_dtype
from .module import Module


def _pair(value, what: str, who: str) -> Tuple[int, int]:
    pair = (value, value) if np.isscalar(value) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) for v in pair):
        raise TypeError(f"{who}: {what} must be an int or a pair of ints, got {value!r}")
    return int(pair[0]), int(pair[1])


def _window_offsets(kernel, stride, out_hw) -> Iterator[Tuple[int, tuple]]:
    """Yield ``(k, index)`` for each kernel offset; ``k = i*kw + j`` is row-major window order."""
    (kh, kw), (sh, sw), (oh, ow) = kernel, stride, out_hw
    for i in range(kh):
        for j in range(kw):
            yield i * kw + j, (slice(None), slice(None),
                               slice(i, i + sh * oh, sh), slice(j, j + sw * ow, sw))


class _Pool2d(Module):
    """Shared constructor, shape arithmetic and padding of the 2-D pools."""

    def __init__(self, kernel_size, stride=None, padding=0, dtype=np.float32) -> None:
        super().__init__()
        who = type(self).__name__
        self.kernel_size = _pair(kernel_size, "kernel_size", who)
        self.stride = self.kernel_size if stride is None else _pair(stride, "stride", who)
        self.padding = _pair(padding, "padding", who)
        self.dtype = as_float_dtype(dtype, who)
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise ValueError(f"{who}: need kernel_size >= 1, stride >= 1, padding >= 0; got "
                             f"{self.kernel_size}, {self.stride}, {self.padding}")
        # PyTorch's rule; it also guarantees that no window is all padding.
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(f"{who}: padding {self.padding} must be at most half of "
                             f"kernel_size {self.kernel_size}")

    def _output_hw(self, x: np.ndarray) -> Tuple[int, int]:
        out = tuple(conv_output_size(size, k, s, p) for size, k, s, p in
                    zip(x.shape[2:], self.kernel_size, self.stride, self.padding))
        if min(out) <= 0:
            raise ValueError(f"{self.describe()}: input {x.shape} is smaller than the kernel "
                             f"{self.kernel_size} with padding {self.padding}")
        return out

    def _pad(self, x: np.ndarray, value: float) -> np.ndarray:
        ph, pw = self.padding
        if ph == 0 and pw == 0:
            return x
        return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)

    def _unpad(self, dxp: np.ndarray) -> np.ndarray:
        ph, pw = self.padding
        h, w = dxp.shape[2] - 2 * ph, dxp.shape[3] - 2 * pw
        return dxp[:, :, ph:ph + h, pw:pw + w]

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


@dataclass
class MaxPoolCache:
    """What MaxPool2d.forward keeps: the padded input and the output."""
    xp: np.ndarray              # padded input (a reference, not a copy)
    y: np.ndarray
    y_shape: tuple


class MaxPool2d(_Pool2d):
    r"""2-D max pooling, ``torch.nn.MaxPool2d`` (dilation 1, floor mode).

    Shapes: x (N, C, H, W) -> y (N, C, OH, OW), OH = (H + 2p - kh) // s + 1.

    .. math::
        y_{nc,ab} = \max_{i < k_h,\, j < k_w} x^{\mathrm{pad}}_{nc,\,a s_h + i,\, b s_w + j},
        \qquad
        dx^{\mathrm{pad}}_{nc,\,a s_h + i^*,\, b s_w + j^*} \mathrel{+}= dy_{nc,ab}

    Padding is with :math:`-\infty`, so it never wins. Ties go to the first
    maximal element in row-major window order (:math:`(i^*, j^*)` is the
    first argmax), which is where PyTorch's CPU kernel sends the gradient.

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int)
        At most half the kernel, as in PyTorch.
    dtype : {np.float32, np.float64}
        The input dtype this layer accepts.
    """

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (N, C, H, W) -> y (N, C, OH, OW)."""
        check_input(self, x, (4,), self.dtype)
        out_hw = self._output_hw(x)
        xp = self._pad(x, -np.inf)
        y = None
        for _, index in _window_offsets(self.kernel_size, self.stride, out_hw):
            # The inputs are finite (check_input), so maximum needs no NaN rule.
            y = np.array(xp[index]) if y is None else np.maximum(y, xp[index], out=y)
        self._cache = MaxPoolCache(xp=xp, y=y, y_shape=y.shape)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dy (N, C, OH, OW) -> dx (N, C, H, W).

        Each window's gradient goes to its first maximal element in row-major
        window order: offset k takes it where its value equals the maximum and
        no earlier offset did.
        """
        check_grad_output(self, dy)
        xp, y = self._cache.xp, self._cache.y
        dxp = np.zeros(xp.shape, dtype=dy.dtype)
        taken = np.zeros(y.shape, dtype=bool)
        first = np.empty(y.shape, dtype=bool)
        for _, index in _window_offsets(self.kernel_size, self.stride, dy.shape[2:]):
            np.equal(xp[index], y, out=first)
            first &= ~taken
            taken |= first
            dxp[index] += dy * first
        self._cache = None
        return self._unpad(dxp)


@dataclass
class AvgPoolCache:
    """What AvgPool2d.forward keeps: only shapes (the backward is linear)."""
    xp_shape: tuple
    y_shape: tuple


class AvgPool2d(_Pool2d):
    r"""2-D average pooling, ``torch.nn.AvgPool2d`` (count_include_pad=True, floor mode).

    Shapes: x (N, C, H, W) -> y (N, C, OH, OW), OH = (H + 2p - kh) // s + 1.

    .. math::
        y_{nc,ab} = \frac{1}{k_h k_w} \sum_{i < k_h,\, j < k_w} x^{\mathrm{pad}}_{nc,\,a s_h + i,\, b s_w + j},
        \qquad
        dx^{\mathrm{pad}}_{nc,\,a s_h + i,\, b s_w + j} \mathrel{+}= \frac{dy_{nc,ab}}{k_h k_w}

    Padding is with zeros and counts in the divisor, PyTorch's default.

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int)
        At most half the kernel, as in PyTorch.
    dtype : {np.float32, np.float64}
        The input dtype this layer accepts.
    """

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (N, C, H, W) -> y (N, C, OH, OW)."""
        check_input(self, x, (4,), self.dtype)
        out_hw = self._output_hw(x)
        xp = self._pad(x, 0.0)
        y = np.zeros(x.shape[:2] + out_hw, dtype=self.dtype)
        for _, index in _window_offsets(self.kernel_size, self.stride, out_hw):
            y += xp[index]
        # Sum first, divide once: the order PyTorch's CPU kernel uses.
        y /= self.kernel_size[0] * self.kernel_size[1]
        self._cache = AvgPoolCache(xp_shape=xp.shape, y_shape=y.shape)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dy (N, C, OH, OW) -> dx (N, C, H, W)."""
        check_grad_output(self, dy)
        share = dy / (self.kernel_size[0] * self.kernel_size[1])
        dxp = np.zeros(self._cache.xp_shape, dtype=dy.dtype)
        for _, index in _window_offsets(self.kernel_size, self.stride, dy.shape[2:]):
            dxp[index] += share
        self._cache = None
        return self._unpad(dxp)


@dataclass
class AdaptiveAvgPoolCache:
    """What AdaptiveAvgPool2d.forward keeps: the input shape."""
    x_shape: tuple
    y_shape: tuple


class AdaptiveAvgPool2d(Module):
    r"""Global average pooling, ``torch.nn.AdaptiveAvgPool2d((1, 1))``.

    Shapes: x (N, C, H, W) -> y (N, C, 1, 1).

    .. math::
        y_{n,c} = \frac{1}{HW} \sum_{h,w} x_{n,c,h,w}, \qquad
        \frac{\partial L}{\partial x_{n,c,h,w}} = \frac{1}{HW} \frac{\partial L}{\partial y_{n,c}}

    Parameters
    ----------
    output_size : 1 or (1, 1)
        Only global pooling is implemented; anything else is an error.
    dtype : {np.float32, np.float64}
        The input dtype this layer accepts.
    """

    def __init__(self, output_size=(1, 1), dtype=np.float32) -> None:
        super().__init__()
        if not (output_size == 1 or (isinstance(output_size, (tuple, list))
                                     and tuple(output_size) == (1, 1))):
            raise ValueError(f"AdaptiveAvgPool2d: only output_size 1 or (1, 1) (global average) "
                             f"is implemented, got {output_size!r}")
        self.output_size = (1, 1)
        self.dtype = as_float_dtype(dtype, type(self).__name__)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (N, C, H, W) -> y (N, C, 1, 1)."""
        check_input(self, x, (4,), self.dtype)
        y = x.mean(axis=(2, 3), keepdims=True)
        self._cache = AdaptiveAvgPoolCache(x_shape=x.shape, y_shape=y.shape)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dy (N, C, 1, 1) -> dx (N, C, H, W)."""
        check_grad_output(self, dy)
        h, w = self._cache.x_shape[2:]
        dx = np.broadcast_to(dy / (h * w), self._cache.x_shape).copy()
        self._cache = None
        return dx

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"
