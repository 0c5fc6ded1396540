"""Residual: y = body(x) + shortcut(x)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .checks import check_grad_output
from .module import Module


@dataclass
class ResidualCache:
    """What Residual.forward keeps: the output shape."""
    y_shape: tuple


class Residual(Module):
    r"""Sum of a body and a shortcut (the identity when ``shortcut`` is None).

    .. math::
        y = B(x) + S(x), \qquad
        \frac{\partial L}{\partial x} = J_B^\top \frac{\partial L}{\partial y}
                                      + J_S^\top \frac{\partial L}{\partial y}

    The two outputs must have equal shapes: nothing is broadcast. Children
    are named ``body`` and ``shortcut`` (the latter only when given).

    Parameters
    ----------
    body : Module
    shortcut : Module, optional
    """

    def __init__(self, body: Module, shortcut: Optional[Module] = None) -> None:
        super().__init__()
        for what, m in (("body", body), ("shortcut", shortcut)):
            if m is not None and not isinstance(m, Module):
                raise TypeError(f"Residual: {what} must be a Module, got {type(m).__name__}")
        self.body = body
        if shortcut is not None:
            self.shortcut = shortcut
        else:
            object.__setattr__(self, "shortcut", None)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x -> body(x) + shortcut(x)."""
        b = self.body.forward(x)
        s = x if self.shortcut is None else self.shortcut.forward(x)
        if b.shape != s.shape:
            raise ValueError(f"{self.describe()}: body output {b.shape} and shortcut output "
                             f"{s.shape} differ (nothing is broadcast)")
        y = b + s
        self._cache = ResidualCache(y_shape=y.shape)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dy -> dx, the sum of both paths' input gradients."""
        check_grad_output(self, dy)
        self._cache = None
        dx = self.body.backward(dy)
        return dx + (dy if self.shortcut is None else self.shortcut.backward(dy))
