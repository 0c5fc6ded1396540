r"""How far float32 masks may legitimately move dt and du: the slack :func:`~.verifier.verify` adds.

With float32 masks (the authors' ``.float()``), autograd rounds every
gradient that reaches a mask to float32 (SPEC "Float32 masks in the
reference"). The gradient of t is a sum of such rounded terms,

.. math::
    \frac{\partial L}{\partial t_i} = -s(t_i) \sum_j \operatorname{fl_{32}}(A_{ij} W_{ij})\, h(z_{ij}),

and A comes out of each side's BLAS with float64 rounding noise. Where
:math:`A_{ij} W_{ij}` sits near a float32 rounding boundary the two sides
round it to neighbouring float32 values, one ulp apart, at most
:math:`2^{-23} |A_{ij} W_{ij}|`. Each term alone stays far inside the
relative tolerance, but when the terms cancel, dt is small beside
:math:`\sum_j |A_{ij} W_{ij}| h(z_{ij})` and a single flipped term can exceed
``rtol * |dt|``: correct code would be called DIVERGENCE on another CPU. So
under float32 masks an entry of dt (and of du, whose terms
:math:`\operatorname{fl_{32}}(\beta\, \partial V/\partial g_{ij}\, dW_{ij})\, h(\cdot)` are rounded the
same way) may differ by

.. math:: \epsilon_i = 1.01 \cdot 2^{-23} \sum_j |\text{term}_{ij}|

besides the relative tolerance: a one-ulp flip in every term (each side
rounds once, so the two roundings of nearly equal values are at most one
float32 spacing apart, and a spacing is at most :math:`2^{-23}` of the
value), with 1 % for reading the terms' sizes from dfbst_np's side.
A rule that is wrong (another slope of h, t for |t|, s(0) = -1, a missing
normalisation) moves dt by a sizeable fraction of its terms, far beyond
:math:`2^{-23} \approx 1.2 \times 10^{-7}` of their sum; the tests check that
such rules still diverge with the slack in place.

The slack follows the error where it goes in one step: the used gradient
(clipped: c times it, with c = min(1, clip_norm / ||g||)), the momentum
buffer (``buf = mu * buf_prev + g``: the same absolute error as the used
gradient) and the parameter (``p - lr * buf``: lr times that). Float64 masks round
nothing, and get no slack.
"""
from __future__ import annotations

from typing import Dict, Mapping, Sequence

import numpy as np

from .. import textbook as tb

#: Float32's largest relative spacing (two neighbouring float32 values differ by
#: at most 2**-23 of either), with 1 % for terms read from dfbst_np's side.
FLOAT32_FLIP = 1.01 * 2.0 ** -23


def _rows(a: np.ndarray) -> np.ndarray:
    return a.reshape(a.shape[0], -1)


def threshold_terms(W: np.ndarray, t: np.ndarray, dW: np.ndarray, method: str) -> np.ndarray:
    r"""Per row, :math:`\sum_j |A_{ij} W_{ij}|\, h(z_{ij})`: the size of dt's terms.

    A is not kept by the trace, but the loss gradient of W is
    :math:`dW = A \odot (M + |W| \odot h(z))` (:func:`dfbst_np.textbook.layer_grads`),
    with both factors in the bracket non-negative, so

    .. math:: |A_{ij} W_{ij}|\, h(z_{ij}) = |dW_{ij}| \frac{|W_{ij}|\, h(z_{ij})}{M_{ij} + |W_{ij}|\, h(z_{ij})}

    (0 where the bracket is 0). ``t`` is the threshold before the step; the
    reset rule is applied as the forward applies it.
    """
    W, dW = _rows(W), _rows(dW)
    M, t_used = tb.forward_mask(W, t, method)
    hz = tb.h(np.abs(W) - tb.effective_threshold(t_used, method)[:, None])
    reach = np.abs(W) * hz
    bracket = M + reach
    share = np.divide(reach, bracket, out=np.zeros_like(reach), where=bracket != 0)
    return (np.abs(dW) * share).sum(axis=1)


def dthreshold_terms(dWs: Sequence[np.ndarray], us: Sequence[np.ndarray], beta: float) -> list:
    r"""Per layer and row, :math:`\sum_j |\beta\, \partial V/\partial g_{ij}\, dW_{ij}|\, h(|\hat G_{ij}| - u_i)`:
    the size of du's terms (:func:`dfbst_np.textbook.backward_mask`), from the
    step that made V."""
    dWs = [_rows(dW) for dW in dWs]
    zs = [np.abs(tb.row_normalise(dW)) - u[:, None] for dW, u in zip(dWs, us)]
    _, dV_dgs = tb.std_and_grad([dW * tb.H(z) for dW, z in zip(dWs, zs)])
    return [(np.abs(beta * dV_dg * dW) * tb.h(z)).sum(axis=1)
            for dV_dg, dW, z in zip(dV_dgs, dWs, zs)]


def spread(slack: Mapping[str, np.ndarray], lr: float,
           clip: float = 1.0) -> Dict[str, Dict[str, np.ndarray]]:
    """Per stage, the slack of each quantity a parameter's gradient error reaches in one step.

    ``slack`` maps parameter names (``"fc1.threshold"``) to their gradient's
    slack; ``clip`` is the factor clipping multiplied the gradients by (1
    when it did not fire). The result maps stage -> quantity -> slack.
    """
    out: Dict[str, Dict[str, np.ndarray]] = {"grad": {}, "used_grad": {}, "update": {}}
    for name, eps in slack.items():
        out["grad"][name] = eps
        out["used_grad"][name] = clip * eps
        out["update"][f"{name}.momentum_buffer"] = clip * eps
        out["update"][name] = abs(lr) * clip * eps
    return out


def clip_factor(grad_norm: float, clip_norm) -> float:
    """The factor clipping multiplies every gradient by: min(1, clip_norm / ||g||)
    (1 without clipping), with 0.1 % for reading ||g|| from dfbst_np's side."""
    if clip_norm is None or not grad_norm > clip_norm:
        return 1.0
    return min(1.0, 1.001 * clip_norm / grad_norm)


def float32_slack(before: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray],
                  layers: Sequence[str], method: str) -> Dict[str, np.ndarray]:
    """The slack of each masked layer's dt in this step (:data:`FLOAT32_FLIP` times its terms)."""
    out = {}
    for n in layers:
        dW = grads.get(f"{n}.weight")
        if dW is None or f"{n}.threshold" not in before:
            continue
        out[f"{n}.threshold"] = FLOAT32_FLIP * threshold_terms(
            before[f"{n}.weight"], before[f"{n}.threshold"], dW, method)
    return out


def float32_slack_u(before: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray],
                    layers: Sequence[str], rounded: Sequence[str], beta: float) -> Dict[str, np.ndarray]:
    """The slack of du in the NEXT step, whose beta term is this step's V.

    V is the std over every masked layer (``layers``); only the layers whose
    masks are float32 (``rounded``) get a slack.
    """
    if not all(f"{n}.weight" in grads and f"{n}.dthreshold" in before for n in layers):
        return {}
    terms = dthreshold_terms([grads[f"{n}.weight"] for n in layers],
                             [before[f"{n}.dthreshold"] for n in layers], beta)
    return {f"{n}.dthreshold": FLOAT32_FLIP * s for n, s in zip(layers, terms) if n in rounded}
