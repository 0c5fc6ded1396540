"""Gradient clipping by total L2 norm, as ``torch.nn.utils.clip_grad_norm_``."""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import numpy as np

from .checks import check_finite


def clip_grad_norm(grads: Mapping[str, np.ndarray], max_norm: float,
                   sq_norms: Optional[Sequence[float]] = None) -> float:
    r"""Scale all gradients in place so that their joint L2 norm is at most ``max_norm``.

    .. math::
        n = \Big(\sum_k \lVert g_k \rVert_2^2\Big)^{1/2}, \qquad
        c = \min\Big(\frac{\text{max\_norm}}{n + 10^{-6}},\ 1\Big), \qquad
        g_k \leftarrow c\, g_k

    As in PyTorch, the norm of each array is taken first and then the norm
    of those norms, each in the gradients' dtype, and ``c`` is applied even
    when it is 1 (an exact no-op).

    Parameters
    ----------
    grads : dict of str to ndarray
        Gradients by parameter name (e.g. ``model.grads``); only these are
        counted and scaled. Parameters without a gradient are simply absent.
    max_norm : float
        Largest allowed total norm, > 0.
    sq_norms : sequence of float, optional
        Each gradient's squared norm, in ``grads``' order, when the caller has
        them already (the trainer does); saves a pass over every gradient.

    Returns
    -------
    float
        The total norm before clipping.

    Raises
    ------
    FloatingPointError
        If a gradient holds NaN or inf (named), instead of spreading it to all.
    """
    if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float, np.integer, np.floating)) \
            or not (math.isfinite(max_norm) and max_norm > 0):
        raise ValueError(f"clip_grad_norm: max_norm must be a finite number > 0, got {max_norm!r}")
    if not isinstance(grads, Mapping):
        raise TypeError(f"clip_grad_norm: grads must be a dict {{name: ndarray}}, "
                        f"got {type(grads).__name__}")
    if not grads:
        return 0.0
    for name, g in grads.items():
        if not isinstance(g, np.ndarray) or g.dtype.kind != "f":
            what = g.dtype.name if isinstance(g, np.ndarray) else type(g).__name__
            raise TypeError(f"clip_grad_norm: gradient of '{name}' must be a floating-point "
                            f"ndarray, got {what}")
    # torch computes each norm in its tensor's dtype; accumulating in float64
    # and rounding once is the closest numpy equivalent for float32.
    if sq_norms is None:
        sq_norms = [np.sum(np.square(g, dtype=np.float64)) for g in grads.values()]
    norms = [np.asarray(np.sqrt(sq), dtype=g.dtype) for sq, g in zip(sq_norms, grads.values())]
    dtype = np.result_type(*norms)
    total = np.sqrt(np.sum(np.square(np.array(norms, dtype=np.float64)))).astype(dtype)
    if not np.isfinite(total):
        for name, g in grads.items():
            check_finite(g, f"clip_grad_norm: gradient of '{name}'")
        raise FloatingPointError(f"clip_grad_norm: total norm overflows ({total})")
    coef = np.minimum(dtype.type(max_norm) / (total + dtype.type(1e-6)), dtype.type(1.0))
    for g in grads.values():
        g *= coef.astype(g.dtype)
    return float(total)
