r"""im2col and col2im in the transposed layout that :class:`~dfbst_np.nn.linear.Conv2d` runs on.

:mod:`dfbst_np.nn.im2col` (the textbook version, kept for teaching and tested
equal to this one) builds X2 with one row per output position,
(N*OH*OW, C*kh*kw). Here the same numbers are laid out transposed,

.. math::
    X_2^\top \in \mathbb{R}^{(C k_h k_w) \times (N\, OH\, OW)}, \qquad
    X_2^\top[(c, i, j), (n, a, b)] = x^{\mathrm{pad}}_{n, c, a s + i, b s + j},

one row per fan-in entry (ordered as ``W.reshape(out, -1)``'s columns) and
the output positions along the contiguous axis. For a convolution that
layout is the cheap one throughout a training step:

* building it copies runs of OW contiguous pixels (not runs of kw);
* the forward product is :math:`Y_2^\top = \hat W X_2^\top`, (out, N*OH*OW),
  whose reshape to (out, N, OH, OW) needs only a block transpose (runs of
  OH*OW) to become the (N, out, OH, OW) output; dY comes in the same way;
* the sparse products need no transposed copies: scipy's compressed kernels
  multiply by a dense matrix whose rows are contiguous, which X2^T and dY2^T
  already are (with one row per output position they had to be transposed
  twice per product, which made a sparse convolution never pay);
* the weight gradient :math:`A = dY_2^\top (X_2^\top)^\top` is one BLAS call,
  and the sampled product gathers rows of both operands directly;
* col2im adds back runs of OW contiguous numbers.

When OW is small (under :data:`BATCH_LAST_BELOW`, e.g. LeNet-5's second
convolution with OW = 8), runs of OW numbers are too short for NumPy's
loops, and the positions are ordered (a, b, n) instead, batch last: the input
is transposed to (C, H, W, N) once, im2col then copies runs of OW*N numbers
and col2im adds them back, 3-6x faster; the output and dY then need a
strided transpose, which costs less than that for small OW.

Those batch-last transposes (the input, the output, dY and dX, each an
(rows, N) <-> (N, rows) matrix transpose) are copied a block of rows at a
time by :func:`dfbst_np.nn.transpose.transpose_2d`, which stays in cache
where NumPy's one-shot transposed copy of a tall matrix does not.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .im2col import conv_output_size
from .transpose import transpose_2d

__all__ = ["im2col_t", "col2im_t", "to_output", "from_output", "BATCH_LAST_BELOW"]

#: Output widths below which the positions are ordered batch last.
BATCH_LAST_BELOW = 16

def _pad(x: np.ndarray, padding: int, axes) -> np.ndarray:
    if not padding:
        return x
    widths = [(0, 0)] * x.ndim
    for a in axes:
        widths[a] = (padding, padding)
    return np.pad(x, widths)


def im2col_t(x: np.ndarray, kh: int, kw: int, stride: int, padding: int,
             batch_last: bool = False) -> np.ndarray:
    """(N, C, H, W) -> X2^T, (C*kh*kw, positions), C-contiguous (a copy).

    Positions are ordered (n, a, b), or (a, b, n) with ``batch_last``.
    """
    n, c, h, w = x.shape
    oh, ow = conv_output_size(h, kh, stride, padding), conv_output_size(w, kw, stride, padding)
    if batch_last:
        xt = transpose_2d(x.reshape(n, c * h * w)).reshape(c, h, w, n)
        xt = _pad(xt, padding, (1, 2))                                              # (C, H, W, N)
        sc, sh, sw, sn = xt.strides
        windows = as_strided(xt, shape=(c, kh, kw, oh, ow, n),
                             strides=(sc, sh, sw, sh * stride, sw * stride, sn), writeable=False)
    else:
        xp = _pad(x, padding, (2, 3))
        sn, sc, sh, sw = xp.strides
        windows = as_strided(xp, shape=(c, kh, kw, n, oh, ow),
                             strides=(sc, sh, sw, sn, sh * stride, sw * stride), writeable=False)
    return windows.reshape(c * kh * kw, n * oh * ow)


def col2im_t(cols_t: np.ndarray, x_shape, kh: int, kw: int, stride: int, padding: int,
             batch_last: bool = False) -> np.ndarray:
    """Adjoint of :func:`im2col_t`: scatter-add X2^T's layout back to (N, C, H, W)."""
    n, c, h, w = x_shape
    oh, ow = conv_output_size(h, kh, stride, padding), conv_output_size(w, kw, stride, padding)
    hp, wp = h + 2 * padding, w + 2 * padding
    if batch_last:
        dxp = np.zeros((c, hp, wp, n), dtype=cols_t.dtype)
        c6 = cols_t.reshape(c, kh, kw, oh, ow, n)
        for i in range(kh):
            for j in range(kw):
                # runs of ow * n contiguous numbers (stride 1)
                dxp[:, i:i + stride * oh:stride, j:j + stride * ow:stride, :] += c6[:, i, j]
        if padding:
            # the reshape below then copies the cropped view once more; padding
            # is not the case this layout is for (LeNet-5 has none)
            dxp = dxp[:, padding:-padding, padding:-padding, :]
        return transpose_2d(dxp.reshape(c * h * w, n)).reshape(n, c, h, w)
    else:
        dxp = np.zeros((n, c, hp, wp), dtype=cols_t.dtype)
        c6 = cols_t.reshape(c, kh, kw, n, oh, ow)
        for i in range(kh):
            for j in range(kw):
                # (c, n, oh, ow) -> (n, c, oh, ow): a view, runs of ow contiguous numbers
                dxp[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride] += c6[:, i, j].transpose(1, 0, 2, 3)
    if padding:
        dxp = dxp[:, :, padding:-padding, padding:-padding]
    return np.ascontiguousarray(dxp)


def to_output(y2t: np.ndarray, n: int, oh: int, ow: int, batch_last: bool = False) -> np.ndarray:
    """Y2^T (out, positions) -> y (N, out, OH, OW), C-contiguous."""
    if batch_last:
        return transpose_2d(y2t.reshape(-1, n)).reshape(n, -1, oh, ow)
    return np.ascontiguousarray(y2t.reshape(-1, n, oh, ow).transpose(1, 0, 2, 3))


def from_output(dy: np.ndarray, batch_last: bool = False) -> np.ndarray:
    """dy (N, out, OH, OW) -> dY2^T (out, positions) in the same order, C-contiguous."""
    if batch_last:
        return transpose_2d(dy.reshape(dy.shape[0], -1)).reshape(dy.shape[1], -1)
    return np.ascontiguousarray(dy.transpose(1, 0, 2, 3)).reshape(dy.shape[1], -1)
