"""Reshaping layers."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .checks import check_grad_output, check_input
from .init import as_float_dtype
from .module import Module


@dataclass
class FlattenCache:
    """What Flatten.forward keeps: the input shape to restore."""
    x_shape: tuple
    y_shape: tuple


class Flatten(Module):
    r"""Merge axes ``start_dim`` .. last into one, as ``torch.nn.Flatten``.

    .. math::
        y_{n, k} = x_{n, c, h, w}, \qquad k = (c H + h) W + w \quad (\text{row-major})

    (N, C, H, W) -> (N, C*H*W) for the default ``start_dim=1``. The output is a
    view of the input when the input is contiguous, as in PyTorch.

    Parameters
    ----------
    start_dim : int
        First axis to merge; at least 1 so the batch axis survives.
    dtype : {np.float32, np.float64}
        The input dtype this layer accepts.
    """

    def __init__(self, start_dim: int = 1, dtype=np.float32) -> None:
        super().__init__()
        if int(start_dim) < 1:
            raise ValueError(f"Flatten: start_dim must be >= 1 (axis 0 is the batch), got {start_dim}")
        self.start_dim = int(start_dim)
        self.dtype = as_float_dtype(dtype, type(self).__name__)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (N, d1, ..., dk) -> y (N, ..., d_start * ... * dk)."""
        check_input(self, x, tuple(range(self.start_dim + 1, 7)), self.dtype)
        y = x.reshape(x.shape[:self.start_dim] + (-1,))
        self._cache = FlattenCache(x_shape=x.shape, y_shape=y.shape)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dy (N, ..., d_start * ... * dk) -> dx (N, d1, ..., dk)."""
        check_grad_output(self, dy)
        dx = dy.reshape(self._cache.x_shape)
        self._cache = None
        return dx

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}"
