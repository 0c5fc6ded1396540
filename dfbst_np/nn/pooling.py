"""Max and average pooling over (N, C, H, W), with PyTorch's semantics.

A window is read as one strided slice per kernel offset (i, j),
``xp[:, :, i : i + s*OH : s, j : j + s*OW : s]``, the same walk that
``col2im`` makes; nothing of size (N, C, OH, OW, kh, kw) is ever built.
The backward adds each offset's share back through the same slice, so
overlapping windows (3x3, stride 2) accumulate as they must.

MaxPool2d has a fast path for windows that tile the input exactly (kernel ==
stride, no padding, H and W multiples of the kernel: LeNet-5's 2x2 pools).
There every input element is in exactly one window, so the input is a view
(N, C, OH, kh, OW, kw), and the backward writes each offset's share straight
into its slice of an uninitialised dx (no zero fill, no read-modify-write);
the numbers are the general path's, bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Tuple

import numpy as np

from .checks import check_arguments, check_grad_output, check_input
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
        check_arguments(self, ("padding",), kernel_size=self.kernel_size, stride=self.stride,
                        padding=self.padding)
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
    """What MaxPool2d.forward keeps: the padded input and the output.

    With ``tiled`` (the fast path), ``xp`` is the input viewed as
    (N, C, OH, kh, OW, kw); otherwise it is the padded (N, C, Hp, Wp) input.
    """
    xp: np.ndarray              # a reference or a view, not a copy
    y: np.ndarray               # (N, C, OH, OW)
    y_shape: tuple
    tiled: bool = False


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

    Windows that tile the input (kernel == stride, no padding, H and W
    multiples of the kernel) take a faster path with the same numbers, bit for
    bit (see the module docstring); everything else takes the general one.

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

    def _tiles(self, x: np.ndarray) -> bool:
        """True if the windows tile x exactly: kernel == stride, no padding, no leftover."""
        return (self.padding == (0, 0) and self.stride == self.kernel_size
                and x.shape[2] % self.kernel_size[0] == 0
                and x.shape[3] % self.kernel_size[1] == 0)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (N, C, H, W) -> y (N, C, OH, OW)."""
        check_input(self, x, (4,), self.dtype)
        out_hw = self._output_hw(x)
        (kh, kw), (oh, ow) = self.kernel_size, out_hw
        tiled = self._tiles(x)
        if tiled:
            # (N, C, OH, kh, OW, kw): a view for a contiguous x; window offset
            # (i, j) is xp[:, :, :, i, :, j], the same elements as the general
            # path's strided slice.
            xp = x.reshape(x.shape[0], x.shape[1], oh, kh, ow, kw)
            windows = [xp[:, :, :, i, :, j] for i in range(kh) for j in range(kw)]
        else:
            xp = self._pad(x, -np.inf)
            windows = [xp[index] for _, index in
                       _window_offsets(self.kernel_size, self.stride, out_hw)]
        # The inputs are finite (check_input), so maximum needs no NaN rule;
        # max is exact, so the order does not matter. The first maximum
        # allocates y instead of copying the first window (one pass less).
        if len(windows) == 1:
            y = np.array(windows[0])
        else:
            y = np.maximum(windows[0], windows[1])
            for window in windows[2:]:
                np.maximum(y, window, out=y)
        self._cache = MaxPoolCache(xp=xp, y=y, y_shape=y.shape, tiled=tiled)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dy (N, C, OH, OW) -> dx (N, C, H, W).

        Each window's gradient goes to its first maximal element in row-major
        window order: offset k takes it where its value equals the maximum and
        no earlier offset did.
        """
        check_grad_output(self, dy)
        if self._cache.tiled:
            return self._backward_tiled(dy)
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

    def _backward_tiled(self, dy: np.ndarray) -> np.ndarray:
        """The backward when the windows tile the input (see :meth:`_tiles`).

        dy (N, C, OH, OW) -> dx (N, C, H, W), C-contiguous. Same rule and same
        bits as the general path, which computes ``0 + dy * first`` per element:
        here ``dy * first`` is written once into its slice of dx, and one
        ``+ 0`` turns its -0.0s (dy < 0 where not first) into the general
        path's +0.0s. The work goes a block of samples at a time
        (:data:`TILED_BLOCK_BYTES` of input), so that x, dx and the masks of a
        block stay in L2 across the kh*kw passes (20-25% faster at batch 256).
        """
        x6, y = self._cache.xp, self._cache.y
        n, c, oh, kh, ow, kw = x6.shape
        dx = np.empty((n, c, oh * kh, ow * kw), dtype=dy.dtype)
        d6 = dx.reshape(x6.shape)                   # a view: dx is contiguous
        block = max(1, TILED_BLOCK_BYTES // max(1, x6[0].nbytes))
        for start in range(0, n, block):
            rows = slice(start, start + block)
            _route_to_first_max(x6[rows], y[rows], dy[rows], d6[rows])
        np.add(dx, 0, out=dx)
        self._cache = None
        return dx


#: Bytes of input per block of samples in MaxPool2d's tiled backward; about
#: what fits in L2 (1 MiB per core here) with the block's masks and dy.
TILED_BLOCK_BYTES = 1 << 20


def _route_to_first_max(x6: np.ndarray, y: np.ndarray, dy: np.ndarray, d6: np.ndarray) -> None:
    """Write ``dy * first`` into every window offset of ``d6``.

    x6, d6 (B, C, OH, kh, OW, kw); y, dy (B, C, OH, OW). ``first`` is True at
    the first offset, in row-major window order, where x6 equals y. Every
    element of d6 is written once; -0.0 is left where dy < 0 and not first.
    """
    kh, kw = x6.shape[3], x6.shape[5]
    offsets = [(i, j) for i in range(kh) for j in range(kw)]
    taken = np.equal(x6[:, :, :, 0, :, 0], y)      # offset 0 is first wherever it is a max
    np.multiply(dy, taken, out=d6[:, :, :, 0, :, 0])
    if len(offsets) == 1:
        return
    first = np.empty(y.shape, dtype=bool)
    for i, j in offsets[1:-1]:
        np.equal(x6[:, :, :, i, :, j], y, out=first)
        np.greater(first, taken, out=first)        # first & ~taken, in one pass
        taken |= first
        np.multiply(dy, first, out=d6[:, :, :, i, :, j])
    # Every window holds its maximum (finite inputs, no padding), so the last
    # offset is first exactly where no earlier one was: no comparison needed.
    i, j = offsets[-1]
    np.logical_not(taken, out=first)
    np.multiply(dy, first, out=d6[:, :, :, i, :, j])


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
