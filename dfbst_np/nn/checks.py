"""Input checks shared by every layer: clear errors, no silent casts.

Every message names the layer (``describe()``: dotted name and class) and
says what was expected and what was received.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def check_input(layer, x, ndim: Sequence[int], dtype, features: Optional[dict] = None):
    """Raise if ``x`` is not what ``layer`` accepts.

    Parameters
    ----------
    layer : Module
        The layer doing the check; named in the message.
    x : object
        The input.
    ndim : sequence of int
        Allowed ranks, e.g. ``(4,)`` for (N, C, H, W).
    dtype : numpy dtype
        The layer's dtype; the input must have exactly this dtype.
    features : dict, optional
        ``{axis: size}`` that must hold, e.g. ``{1: in_channels}``.
    """
    who = layer.describe()
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{who}: expected a numpy.ndarray, got {type(x).__name__}")
    if x.ndim not in tuple(ndim):
        raise ValueError(
            f"{who}: expected an input of rank {' or '.join(map(str, ndim))}, "
            f"got shape {x.shape}")
    if x.dtype != dtype:
        raise TypeError(
            f"{who}: expected dtype {np.dtype(dtype).name}, got {x.dtype.name} "
            f"(inputs are never cast silently; convert with x.astype(np.{np.dtype(dtype).name}))")
    for axis, size in (features or {}).items():
        if x.shape[axis] != size:
            raise ValueError(
                f"{who}: expected size {size} on axis {axis}, got input of shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{who}: got an empty batch, shape {x.shape}")
    check_finite(x, f"{who}: input")


def check_finite(a: np.ndarray, where: str) -> None:
    """Raise FloatingPointError naming ``where`` if ``a`` holds NaN or inf."""
    if not np.isfinite(a).all():
        bad = "NaN" if np.isnan(a).any() else "inf"
        raise FloatingPointError(f"{where} contains {bad}")


def check_grad_output(layer, dy) -> None:
    """The upstream gradient must match the forward output's shape and dtype.

    Every layer's cache records ``y_shape``; a backward without a forward
    before it has no cache.
    """
    shape = layer.pending_output_shape
    if shape is None:
        raise RuntimeError(f"{layer.describe()}: backward called before forward")
    if not isinstance(dy, np.ndarray) or dy.shape != shape:
        got = dy.shape if isinstance(dy, np.ndarray) else type(dy).__name__
        raise ValueError(f"{layer.describe()}: backward expected a gradient of shape "
                         f"{shape}, got {got}")
    dtype = getattr(layer, "dtype", dy.dtype)
    if dy.dtype != dtype:
        raise TypeError(f"{layer.describe()}: backward expected a gradient of dtype "
                        f"{np.dtype(dtype).name}, got {dy.dtype.name}")
    check_finite(dy, f"{layer.describe()}: backward: the upstream gradient")


def check_arguments(layer, nonnegative: Sequence[str] = (), **values) -> None:
    """Constructor arguments must be integers > 0 (or >= 0 when named in ``nonnegative``).

    A value may be a tuple (``kernel_size=(3, 5)``): each entry is checked.
    Called first in a constructor, so a bad size fails there, naming the
    class and the argument, and not later as a ZeroDivisionError.
    """
    who = type(layer).__name__
    for name, value in values.items():
        for v in (value if isinstance(value, tuple) else (value,)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{who}: {name} must be an integer, got {value!r}")
            if v < 0 or (v == 0 and name not in nonnegative):
                raise ValueError(f"{who}: {name} must be {'>= 0' if name in nonnegative else '> 0'}, "
                                 f"got {value!r}")
