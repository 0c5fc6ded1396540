r"""The forward mask and the gradient rule of a masked layer (SPEC section 1).

One rule for linear and convolutional layers: a conv weight is the
(out, in*kh*kw) matrix to it. Row i of W belongs to output unit i, which has
threshold t_i.

Forward

.. math::
    M_{ij} = H(|W_{ij}| - \tau_i), \quad \tau_i = |t_i| \text{ (dfbst) or } t_i \text{ (dst)},
    \qquad \hat W = W \odot M

Backward, with A = dL/dW_hat and the STE h in place of H':

.. math::
    \frac{\partial L}{\partial W} = A \odot (M + |W| \odot h(|W| - \tau)), \qquad
    \frac{\partial L}{\partial t_i} = -s(t_i) \sum_j A_{ij} W_{ij}\, h(|W_{ij}| - \tau_i)

with s(t) = sign of t (1 at t = 0) for dfbst and s = 1 for dst. The
penalty :math:`\alpha \sum_i e^{-t_i}` is a separate term (``threshold_penalty``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

from .step import long_tailed, step

RESET_DENSITY = 0.01   # the reference zeroes t when a layer keeps <= 1 % of its weights


@dataclass
class ForwardMask:
    """What the forward mask keeps for the gradient rule.

    M (out, fan_in): the mask, 0/1 in W's dtype.
    z (out, fan_in): |W| - tau, the argument of H, where h is evaluated.
    reset: whether the reset rule zeroed t in this forward.
    """
    M: np.ndarray
    z: np.ndarray
    reset: bool


def effective_threshold(t: np.ndarray, method: str) -> np.ndarray:
    """tau = |t| for dfbst, t for dst, as a column (out, 1) to broadcast over rows."""
    return (np.abs(t) if method == "dfbst" else t)[:, None]


def forward_mask(w2: np.ndarray, t: np.ndarray, method: str) -> ForwardMask:
    r"""M = H(|W| - tau), with the reset rule.

    .. math::
        \text{if } \operatorname{mean}(M) \le 0.01: \; t \leftarrow 0, \; M = H(|W| - \tau(0))

    ``t`` is modified in place when the reset fires: the reference does this
    in every forward, evaluation included, so a layer can never mask itself
    out entirely.

    Parameters
    ----------
    w2 : (out, fan_in) weight matrix W.
    t : (out,) forward thresholds (the layer's parameter; may be reset in place).
    method : "dst" or "dfbst".
    """
    abs_w = np.abs(w2)
    z = abs_w - effective_threshold(t, method)
    M = step(z)
    reset = M.mean() <= RESET_DENSITY
    if reset:
        t[...] = 0
        z = abs_w - effective_threshold(t, method)
        M = step(z)
    return ForwardMask(M=M, z=z, reset=bool(reset))


def masked_layer_grads(A: np.ndarray, w2: np.ndarray, t: np.ndarray, fm: ForwardMask,
                       method: str, estimator=long_tailed,
                       float32_masks: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    r"""The gradient rule: dL/dW and dL/dt from A = dL/dW_hat.

    .. math::
        G = A \odot W, \qquad
        \frac{\partial L}{\partial W} = A \odot M + G \odot h(z) \odot \operatorname{sign}(W), \qquad
        \frac{\partial L}{\partial t_i} = -s(t_i) \sum_j G_{ij}\, h(z_{ij})

    (G * sign(W) = A * |W|, the form SPEC writes.) G is the gradient that
    reaches the mask M; the reference keeps M in float32, so with
    ``float32_masks`` G is rounded to float32 exactly where autograd rounds it.

    Parameters
    ----------
    A : (out, fan_in) gradient of the loss with respect to W_hat.
    w2 : (out, fan_in) W.   t : (out,) thresholds.   fm : this step's ForwardMask.
    method : "dst" or "dfbst" (s = sign(t) with s(0) = 1 for dfbst; s = 1 for dst).

    Returns
    -------
    dW : (out, fan_in).   dt : (out,), without the alpha penalty.
    """
    G = A * w2
    if float32_masks:
        G = G.astype(np.float32).astype(A.dtype)
    Gh = G * estimator(fm.z)
    dW = A * fm.M + Gh * np.sign(w2)
    s = np.where(t >= 0, 1, -1).astype(A.dtype) if method == "dfbst" else 1
    dt = -s * Gh.sum(axis=1)
    return dW, dt


def threshold_penalty(t: np.ndarray, alpha: float) -> Tuple[float, np.ndarray]:
    r"""The sparsity penalty on forward thresholds and its gradient.

    .. math::
        P = \alpha \sum_i e^{-t_i}, \qquad \frac{\partial P}{\partial t_i} = -\alpha e^{-t_i}

    It pushes every t_i up, so masks get sparser until the loss pushes back.
    """
    e = np.exp(-t)
    return float(alpha * e.sum()), -alpha * e
