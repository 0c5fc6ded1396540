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

from .fused import row_sums, sub_rows
from .kernels import Support
from .step import long_tailed, step


class SupportGrad:
    """A weight gradient known only on a support (the predicted weight gradient).

    support : the entries (:class:`~dfbst_np.sparse.kernels.Support`, row-major).
    values : dW on those entries; dW is taken as 0 everywhere else.
    """

    __slots__ = ("support", "values")

    def __init__(self, support: Support, values: np.ndarray) -> None:
        self.support, self.values = support, values

    @property
    def shape(self):
        return self.support.shape

    @property
    def dtype(self):
        return self.values.dtype

    def dense(self) -> np.ndarray:
        """The gradient as an (out, fan_in) array, zero off the support."""
        out = np.zeros(self.shape, dtype=self.values.dtype)
        out.reshape(-1)[self.support.flat] = self.values
        return out


class BackwardMask:
    """Result of :func:`backward_mask`, one list entry per masked layer.

    D : masks (out, fan_in) in the gradient's dtype (made on first read).
    keep : D as booleans: an (out, fan_in) array for a dense gradient, one
        entry per support entry for a :class:`SupportGrad`.
    masked : dW * D, what the optimiser uses: an array for a dense gradient,
        a :class:`SupportGrad` (values on the same support) for a support one.
    nnz : kept entries of D per layer.
    V : the std of all masked entries.   grad_u : d(scale * V)/du per layer (out,).
    """

    def __init__(self, keep, masked, V: float, grad_u, nnz, shapes, dtypes) -> None:
        self.keep, self.masked, self.V, self.grad_u, self.nnz = keep, masked, V, grad_u, nnz
        self._shapes, self._dtypes, self._D = shapes, dtypes, None

    @property
    def D(self) -> List[np.ndarray]:
        if self._D is None:
            self._D = [dense_keep(k, m, shape).astype(dt)
                       for k, m, shape, dt in zip(self.keep, self.masked, self._shapes, self._dtypes)]
        return self._D


def dense_keep(keep: np.ndarray, masked, shape) -> np.ndarray:
    """D as an (out, fan_in) bool array, also for a support gradient."""
    if not isinstance(masked, SupportGrad):
        return keep
    out = np.zeros(shape, dtype=bool)
    out.reshape(-1)[masked.support.flat] = keep
    return out


def backward_mask(grads: Sequence[Union[np.ndarray, SupportGrad]], thresholds: Sequence[np.ndarray],
                  scale: float = 1.0, estimator=long_tailed,
                  float32_masks: bool = False) -> BackwardMask:
    r"""Apply D to each layer's weight gradient and compute V and its u-gradient.

    Parameters
    ----------
    grads : per layer dW as (out, fan_in) matrices, or :class:`SupportGrad`
        for a gradient computed only on a support (the predicted weight
        gradient: row normalisation, D, V and dV/du then use its entries and
        take dW = 0 elsewhere). Not modified.
    thresholds : per layer u, shape (out,).
    scale : beta; grad_u is the gradient of ``scale * V``. It matters beyond a
        factor only with ``float32_masks``, where the reference rounds
        beta * dV/dg * dW to float32 before h is applied.

    Notes
    -----
    Without ``float32_masks`` each dense layer costs about 15 passes over its
    gradient and no concatenation: |dW| (1) and its row sums (one BLAS
    matrix-vector product), |Ghat| - u (a division and an exact rank-1
    update, see :func:`~dfbst_np.sparse.fused.sub_rows`), D (1), g = dW * D
    (1) and its sum (1); then, with the mean over all layers, g - mean (1),
    its sum of squares (one dot product), times dW (1), times h (4 + 1) and
    the row sums. V's mean and sum of squares are accumulated per layer, so

    .. math::
        \frac{\partial (\beta V)}{\partial u_i} = -\frac{\beta}{(n-1) V}
            \sum_j (g_{ij} - \bar g)\, dW_{ij}\, h(|\hat G_{ij}| - u_i)

    takes the constant out of the sum (equal to the reference's
    beta * dV/dg * dW * h up to rounding). With ``float32_masks`` the
    reference's own order is kept, because the rounding to float32 sits
    inside it.
    """
    if float32_masks:
        return _backward_mask_float32(grads, thresholds, scale, estimator)
    keeps, masked, nnzs, zs, sums, shapes, dtypes = [], [], [], [], [], [], []
    n = 0
    for dW, u in zip(grads, thresholds):
        if isinstance(dW, SupportGrad):
            sup, v = dW.support, dW.values
            absv = np.abs(v)
            r = sup.row_sums(absv)
            r[r == 0] = 1                      # a row of zeros normalises to 0 (nan_to_num of 0/0)
            absv /= sup.per_entry(r)           # |Ghat| on the support
            absv -= sup.per_entry(u)
            z = absv
            keep = np.greater(z, 0)
            g = SupportGrad(sup, np.multiply(v, keep))
            total = g.values.sum()
            shape = sup.shape
        else:
            z = np.abs(dW)
            r = row_sums(z)
            r[r == 0] = 1                      # a row of zeros normalises to 0 (nan_to_num of 0/0)
            np.divide(z, r[:, None], out=z)    # |Ghat| = |dW / r|, exactly
            sub_rows(z, np.ascontiguousarray(u, dtype=z.dtype), out=z)
            keep = np.greater(z, 0)
            g = np.multiply(dW, keep)
            total = row_sums(g).sum()          # a BLAS product with ones: 3x faster than g.sum()
            shape = dW.shape
        keeps.append(keep)
        masked.append(g)
        nnzs.append(int(np.count_nonzero(keep)))
        zs.append(z)
        sums.append(total)
        shapes.append(shape)
        dtypes.append(z.dtype)
        n += shape[0] * shape[1]

    mean = sum(sums) / n if n else 0.0
    ss, qs = 0, []
    for dW, g, z in zip(grads, masked, zs):
        sparse = isinstance(g, SupportGrad)
        gv = g.values if sparse else g
        t = np.subtract(gv, mean)
        flat = t.reshape(-1)
        ss = ss + np.dot(flat, flat)
        if sparse:
            ss = ss + (g.shape[0] * g.shape[1] - gv.size) * (mean * mean)   # g = 0 off the support
        t *= dW.values if sparse else dW
        t *= _estimate(estimator, z)
        qs.append(g.support.row_sums(t) if sparse else row_sums(t))
    V = float(np.sqrt(ss / (n - 1))) if n > 1 else 0.0
    # dV/dg is 0 when V is 0: every masked entry equal, nothing to spread.
    c = scale / ((n - 1) * V) if V > 0 else 0.0
    grad_u = [np.multiply(q, -c) for q in qs]
    return BackwardMask(keeps, masked, V, grad_u, nnzs, shapes, dtypes)


def _estimate(estimator, z):
    return long_tailed(z, out=z) if estimator is long_tailed else estimator(z)


def _backward_mask_float32(grads, thresholds, scale, estimator) -> BackwardMask:
    """The reference's order of operations, with its float32 rounding (dense gradients)."""
    grads = [g.dense() if isinstance(g, SupportGrad) else g for g in grads]
    z, D, masked = [], [], []
    for dW, u in zip(grads, thresholds):
        row_l1 = np.abs(dW).sum(axis=1, keepdims=True)
        # A row of zeros normalises to 0 (the reference's nan_to_num of 0/0).
        g_hat = np.divide(dW, row_l1, out=np.zeros_like(dW), where=row_l1 != 0)
        z.append(np.abs(g_hat) - u[:, None])
        D.append(step(z[-1]))
        masked.append(dW * D[-1])

    flat = np.concatenate([g.ravel() for g in masked])
    n = flat.size
    mean = flat.mean()
    V = float(np.sqrt(((flat - mean) ** 2).sum() / (n - 1))) if n > 1 else 0.0

    grad_u = []
    for dW, g, zi in zip(grads, masked, z):
        # dV/dg is 0 when V is 0: every masked entry equal, nothing to spread.
        dV_dg = (g - mean) / ((n - 1) * V) if V > 0 else np.zeros_like(g)
        into_mask = scale * dV_dg * dW          # gradient that reaches D
        into_mask = into_mask.astype(np.float32).astype(dW.dtype)
        grad_u.append(-(into_mask * estimator(zi)).sum(axis=1))
    keeps = [d != 0 for d in D]
    bm = BackwardMask(keeps, masked, V, grad_u, [int(np.count_nonzero(k)) for k in keeps],
                      [g.shape for g in grads], [g.dtype for g in grads])
    bm._D = D
    return bm
