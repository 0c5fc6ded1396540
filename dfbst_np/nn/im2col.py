"""im2col and col2im: a convolution as one matrix product.

A (N, C, H, W) input with a (kh, kw) kernel, stride s and zero padding p
becomes a matrix X2 of shape (N*OH*OW, C*kh*kw): one row per output
position, ordered (n, oh, ow), one column per fan-in entry, ordered
(c, i, j) exactly like ``W.reshape(out, C*kh*kw)``. Then the convolution
is ``X2 @ W2.T``, the same product a linear layer computes, which is what
lets linear and conv layers share one mask rule and one set of kernels.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def im2col(x: np.ndarray, kh: int, kw: int, stride: int, padding: int) -> np.ndarray:
    """(N, C, H, W) -> (N*OH*OW, C*kh*kw) patches (a copy)."""
    n, c, h, w = x.shape
    oh, ow = conv_output_size(h, kh, stride, padding), conv_output_size(w, kw, stride, padding)
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    sn, sc, sh, sw = x.strides
    # A read-only strided view of every window; reshape copies it into rows.
    windows = as_strided(x, shape=(n, oh, ow, c, kh, kw),
                         strides=(sn, sh * stride, sw * stride, sc, sh, sw), writeable=False)
    return windows.reshape(n * oh * ow, c * kh * kw)


def col2im(cols: np.ndarray, x_shape, kh: int, kw: int, stride: int, padding: int) -> np.ndarray:
    """Adjoint of :func:`im2col`: scatter-add (N*OH*OW, C*kh*kw) rows back to (N, C, H, W).

    Overlapping windows add up, which is exactly the gradient of the copy
    that im2col made.
    """
    n, c, h, w = x_shape
    oh, ow = conv_output_size(h, kh, stride, padding), conv_output_size(w, kw, stride, padding)
    dxp = np.zeros((n, c, h + 2 * padding, w + 2 * padding), dtype=cols.dtype)
    # (n, oh, ow, c, kh, kw) -> (kh, kw, n, c, oh, ow): one strided add per kernel offset.
    c6 = cols.reshape(n, oh, ow, c, kh, kw).transpose(4, 5, 0, 3, 1, 2)
    for i in range(kh):
        for j in range(kw):
            dxp[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride] += c6[i, j]
    if padding:
        return dxp[:, :, padding:-padding, padding:-padding]
    return dxp
