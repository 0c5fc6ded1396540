"""Inverted dropout."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .activations import ELEMENTWISE_NDIM
from .checks import check_grad_output, check_input
from .init import as_float_dtype, as_rng
from .module import Module


@dataclass
class DropoutCache:
    """What Dropout.forward keeps: the scaled keep-mask (None in evaluation mode)."""
    scale: Optional[np.ndarray]     # (N, ...) entries 0 or 1/(1-p)
    y_shape: tuple


class Dropout(Module):
    r"""Inverted dropout, ``torch.nn.Dropout``: zero each entry with probability p.

    .. math::
        y = x \odot \frac{B}{1 - p}, \quad B_k \sim \mathrm{Bernoulli}(1 - p), \qquad
        \frac{\partial L}{\partial x} = \frac{\partial L}{\partial y} \odot \frac{B}{1 - p}

    In evaluation mode y = x (the input itself is returned, as in PyTorch).
    With p = 1 every entry is dropped. The draws come from the layer's own
    numpy Generator, so a seeded model repeats its masks; they cannot equal
    PyTorch's, which uses another generator.

    Parameters
    ----------
    p : float
        Drop probability, in [0, 1].
    rng : numpy.random.Generator, int or None
        Source of the masks (see :func:`dfbst_np.nn.init.as_rng`).
    dtype : {np.float32, np.float64}
        The input dtype this layer accepts.
    """

    def __init__(self, p: float = 0.5, rng=None, dtype=np.float32) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p!r}")
        self.p = float(p)
        self.rng = as_rng(rng)
        self.dtype = as_float_dtype(dtype, type(self).__name__)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (N, ...) -> y (N, ...), same shape."""
        check_input(self, x, ELEMENTWISE_NDIM, self.dtype)
        if not self.training or self.p == 0.0:
            self._cache = DropoutCache(scale=None, y_shape=x.shape)
            return x
        keep = self.rng.random(x.shape, dtype=self.dtype) >= self.p
        # p = 1 keeps nothing (rng.random < 1), so the kept value never divides by zero.
        kept = 1.0 / (1.0 - self.p) if self.p < 1.0 else 0.0
        scale = np.where(keep, kept, 0.0).astype(self.dtype)
        self._cache = DropoutCache(scale=scale, y_shape=x.shape)
        return x * scale

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dy (N, ...) -> dx (N, ...)."""
        check_grad_output(self, dy)
        scale = self._cache.scale
        self._cache = None
        return dy if scale is None else dy * scale

    def extra_repr(self) -> str:
        return f"p={self.p}"
