r"""DFBST's backward mask: which weights update, and the statistic V that trains it.

After the loss gradient dW of every masked layer is known:

.. math::
    \hat G_{ij} = \frac{dW_{ij}}{\sum_k |dW_{ik}|}, \qquad
    D_{ij} = H(|\hat G_{ij}| - u_i), \qquad
    g = dW \odot D

and over all masked layers together, with g the concatenation of their g:

.. math::
    V = \operatorname{std}(g) = \sqrt{\tfrac{1}{n-1} \sum_k (g_k - \bar g)^2}, \qquad
    \frac{\partial V}{\partial g_k} = \frac{g_k - \bar g}{(n - 1) V}, \qquad
    \frac{\partial V}{\partial u_i} = -\sum_j \frac{\partial V}{\partial g_{ij}}\, dW_{ij}\, h(|\hat G_{ij}| - u_i)

The trainer adds beta * V to the *next* step's loss, so u learns one step
late (SPEC: "Objective and optimiser").
"""
from __future__ import annotations

from typing import List, Sequence, Union

import numpy as np

from .entries import Entries, Pattern
from .fused import round32, scratch
from .step import apply_estimator, long_tailed


class BackwardMask:
    """Result of :func:`backward_mask`, one list entry per masked layer.

    patterns : D per layer as a :class:`~dfbst_np.sparse.entries.Pattern`
        (what a layer's ``set_backward_mask`` takes).
    masked : dW * D, what the optimiser uses, in the layout it came in: an
        (out, fan_in) array for an array, an :class:`~dfbst_np.sparse.entries.Entries`
        on the same support for Entries.
    V : the std of all masked entries.   grad_u : d(scale * V)/du per layer (out,).
    D : masks (out, fan_in) in the gradient's dtype (made when read).
    nnz : kept entries of D per layer.
    """

    def __init__(self, patterns: List[Pattern], masked, V: float, grad_u, dtypes) -> None:
        self.patterns, self.masked, self.V, self.grad_u = patterns, masked, V, grad_u
        self.dtypes = dtypes

    @property
    def D(self) -> List[np.ndarray]:
        return [p.dense(dt) for p, dt in zip(self.patterns, self.dtypes)]

    @property
    def nnz(self) -> List[int]:
        return [p.nnz for p in self.patterns]


def backward_mask(grads: Sequence[Union[np.ndarray, Entries]], thresholds: Sequence[np.ndarray],
                  scale: float = 1.0, estimator=long_tailed,
                  float32_masks: bool = False) -> BackwardMask:
    r"""Apply D to each layer's weight gradient and compute V and its u-gradient.

    Textbook twin: :func:`dfbst_np.textbook.backward_mask`.

    Parameters
    ----------
    grads : per layer dW as (out, fan_in) matrices or
        :class:`~dfbst_np.sparse.entries.Entries`. Entries on a support are a
        gradient computed only there (the predicted weight gradient): row
        normalisation, D, V and dV/du then use its entries and take dW = 0
        elsewhere, so D lies inside the support. Not modified.
    thresholds : per layer u, shape (out,).
    scale : beta; grad_u is the gradient of ``scale * V``.
    float32_masks : round the gradient that reaches D, scale * dV/dg * dW, to
        float32 before h is applied, as the reference's float32 masks do.

    Notes
    -----
    Each full layer costs about 13 passes over its gradient and no
    concatenation: |dW| (1) and its row sums (one BLAS matrix-vector
    product), |Ghat| - u (a division and an exact rank-1 update, see
    :func:`~dfbst_np.sparse.fused.sub_rows`), D (1), g = dW * D (1) and its
    sum (1); then, with the mean over all layers, g - mean (1, into a reused
    scratch array), its sum of squares (one dot product), h (4) times dW (1)
    in the buffer of |Ghat| - u, and the row dots of the two (one read of
    each, :meth:`~dfbst_np.sparse.entries.Entries.row_dots`). Without
    float32 rounding the constant of dV/dg comes out of the sum,

    .. math::
        \frac{\partial (\beta V)}{\partial u_i} = -\frac{\beta}{(n-1) V}
            \sum_j (g_{ij} - \bar g)\, dW_{ij}\, h(|\hat G_{ij}| - u_i)

    (equal to the reference's beta * dV/dg * dW * h up to rounding); with it,
    the reference's order is kept, because the rounding sits inside it.
    """
    views = [g if isinstance(g, Entries) else Entries(g) for g in grads]
    patterns, masked, zs, sums = [], [], [], []
    n = 0
    for dW, u in zip(views, thresholds):
        z = np.abs(dW.values)
        r = dW.row_sums(z)
        r[r == 0] = 1                          # a row of zeros normalises to 0 (nan_to_num of 0/0)
        dW.div_rows(z, r)                      # |Ghat| = |dW / r|, exactly
        dW.sub_rows(z, u)
        keep = np.greater(z, 0)
        g = dW.like(np.multiply(dW.values, keep))
        patterns.append(dW.pattern(keep))
        masked.append(g)
        zs.append(z)
        sums.append(g.total(g.values))
        n += dW.size

    mean = sum(sums) / n if n else 0.0
    ss, devs = 0, []
    for k, g in enumerate(masked):
        # g - mean: kept only for the sum of squares and the row dots below
        d = g.values if float32_masks else scratch(g.values.shape, g.dtype, f"backward_mask {k}")
        d = np.subtract(g.values, mean, out=None if float32_masks else d)
        flat = d.reshape(-1)
        ss = ss + np.dot(flat, flat) + (g.size - d.size) * (mean * mean)   # g = 0 off a support
        devs.append(d)
    V = float(np.sqrt(ss / (n - 1))) if n > 1 else 0.0
    # dV/dg is 0 when V is 0: every masked entry equal, nothing to spread.
    c = scale / ((n - 1) * V) if V > 0 else 0.0
    grad_u = []
    for dW, d, z in zip(views, devs, zs):
        if float32_masks:                      # scale * dV/dg * dW, rounded as it reaches D
            if V > 0:
                d /= (n - 1) * V
            else:
                d[...] = 0
            d *= scale
            d *= dW.values
            round32(d)
            d *= apply_estimator(estimator, z, out=z)
            grad_u.append(-dW.row_sums(d))
        else:
            q = apply_estimator(estimator, z, out=z)
            q *= dW.values                     # dW h(|Ghat| - u)
            grad_u.append(np.multiply(dW.row_dots(d, q), -c))
    masked = [m if isinstance(g, Entries) else m.values for g, m in zip(grads, masked)]
    return BackwardMask(patterns, masked, V, grad_u, [v.dtype for v in views])
