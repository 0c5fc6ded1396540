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

from dataclasses import dataclass
from typing import List, Sequence

import numpy as np

from .step import long_tailed, step


@dataclass
class BackwardMask:
    """Result of :func:`backward_mask`, one list entry per masked layer.

    D : masks (out, fan_in).   masked : dW * D, what the optimiser uses.
    V : the std of all masked entries.   grad_u : d(scale * V)/du per layer (out,).
    """
    D: List[np.ndarray]
    masked: List[np.ndarray]
    V: float
    grad_u: List[np.ndarray]


def backward_mask(grads: Sequence[np.ndarray], thresholds: Sequence[np.ndarray],
                  scale: float = 1.0, estimator=long_tailed,
                  float32_masks: bool = False) -> BackwardMask:
    """Apply D to each layer's weight gradient and compute V and its u-gradient.

    Parameters
    ----------
    grads : per layer dW as (out, fan_in) matrices (not modified).
    thresholds : per layer u, shape (out,).
    scale : beta; grad_u is the gradient of ``scale * V``. It matters beyond a
        factor only with ``float32_masks``, where the reference rounds
        beta * dV/dg * dW to float32 before h is applied.
    """
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
        if float32_masks:
            into_mask = into_mask.astype(np.float32).astype(dW.dtype)
        grad_u.append(-(into_mask * estimator(zi)).sum(axis=1))
    return BackwardMask(D=D, masked=masked, V=V, grad_u=grad_u)
