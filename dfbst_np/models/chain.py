"""A model body that runs named children in a fixed order.

The reference models name their layers (``fc1``, ``conv2``...) rather than
numbering them, so they cannot be a Sequential; ``Chain`` runs the children
listed in ``order`` forward, and backward in reverse.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..nn.module import Module


class Chain(Module):
    """Forward through ``self.order`` (names of children), backward in reverse."""

    order: Sequence[str] = ()

    def forward(self, x: np.ndarray) -> np.ndarray:
        for name in self.order:
            x = getattr(self, name).forward(x)
        return x

    def backward(self, dy: np.ndarray) -> np.ndarray:
        for name in reversed(self.order):
            dy = getattr(self, name).backward(dy)
        return dy
