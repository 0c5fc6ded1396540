"""Batch normalisation: one implementation on (rows, C), two front doors.

BatchNorm1d normalises (N, C) (or (N, C, L)), BatchNorm2d (N, C, H, W). Both
move the channel axis last and flatten the rest, so every statistic is a
column statistic of a (M, C) matrix with M = N (or N*L, or N*H*W).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .checks import check_arguments, check_grad_output, check_input
from .init import as_float_dtype
from .module import Module


@dataclass
class BatchNormCache:
    """What _BatchNorm.forward keeps for the backward."""
    xhat: np.ndarray        # (M, C) normalised input
    inv_std: np.ndarray     # (C,) 1 / sqrt(var + eps) of the statistics used
    batch_stats: bool       # True: batch statistics (training), False: running
    y_shape: tuple


class _BatchNorm(Module):
    r"""Batch normalisation over every axis but the channel axis 1.

    Training mode, on the (M, C) matrix :math:`X` (biased variance to
    normalise, unbiased to track):

    .. math::
        \mu = \tfrac{1}{M}\textstyle\sum_m X_m, \quad
        \sigma^2 = \tfrac{1}{M}\textstyle\sum_m (X_m - \mu)^2, \quad
        \hat X = \frac{X - \mu}{\sqrt{\sigma^2 + \epsilon}}, \quad
        Y = \gamma \hat X + \beta,

        \hat\mu \leftarrow (1 - m)\hat\mu + m\mu, \quad
        \hat\sigma^2 \leftarrow (1 - m)\hat\sigma^2 + m \tfrac{M}{M - 1}\sigma^2.

    Evaluation mode uses :math:`\hat\mu, \hat\sigma^2` in place of
    :math:`\mu, \sigma^2` and updates nothing.

    Parameters
    ----------
    num_features : int
        C, the size of axis 1.
    eps : float
        Added to the variance.
    momentum : float
        Weight m of the new batch in the running statistics.
    weight_init : float
        Initial value of every entry of ``weight`` (:math:`\gamma`); models set
        0.5 (VGG-16) or 0 (ResNet-18's last BN of each block).
    dtype : {np.float32, np.float64}
        Dtype of the parameters, running statistics and accepted input.

    Attributes
    ----------
    params : ``weight`` (C,), ``bias`` (C,)
    buffers : ``running_mean`` (C,), ``running_var`` (C,),
        ``num_batches_tracked`` (0-d int64)
    """

    _ndim: tuple = ()   # accepted input ranks, set by the subclasses

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1,
                 weight_init: float = 1.0, dtype=np.float32) -> None:
        super().__init__()
        who = type(self).__name__
        check_arguments(self, num_features=num_features)
        self.dtype = as_float_dtype(dtype, who)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"{who}: momentum must be in [0, 1], got {momentum!r}")
        self.num_features, self.eps, self.momentum = int(num_features), float(eps), float(momentum)
        c = self.num_features
        self._params["weight"] = np.full(c, weight_init, dtype=self.dtype)
        self._params["bias"] = np.zeros(c, dtype=self.dtype)
        self._buffers["running_mean"] = np.zeros(c, dtype=self.dtype)
        self._buffers["running_var"] = np.ones(c, dtype=self.dtype)
        self._buffers["num_batches_tracked"] = np.array(0, dtype=np.int64)

    # (N, C, *rest) <-> (N * prod(rest), C)
    @staticmethod
    def _to_rows(x: np.ndarray) -> np.ndarray:
        return np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])

    @staticmethod
    def _from_rows(x2: np.ndarray, shape: tuple) -> np.ndarray:
        moved = (shape[0],) + tuple(shape[2:]) + (shape[1],)
        return np.ascontiguousarray(np.moveaxis(x2.reshape(moved), -1, 1))

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (N, C, ...) -> y (N, C, ...), same shape."""
        check_input(self, x, self._ndim, self.dtype, {1: self.num_features})
        x2 = self._to_rows(x)
        m = x2.shape[0]
        if self.training:
            if m < 2:
                raise ValueError(f"{self.describe()}: training needs more than one value per "
                                 f"channel to take a batch variance, got input of shape {x.shape}")
            mean, var = x2.mean(axis=0), x2.var(axis=0)
            self._track(mean, var, m)
        else:
            mean, var = self._buffers["running_mean"], self._buffers["running_var"]
        inv_std = 1.0 / np.sqrt(var + self.eps)
        xhat = (x2 - mean) * inv_std
        y2 = xhat * self._params["weight"] + self._params["bias"]
        self._cache = BatchNormCache(xhat=xhat, inv_std=inv_std, batch_stats=self.training,
                                     y_shape=x.shape)
        return self._from_rows(y2, x.shape)

    def _track(self, mean: np.ndarray, var: np.ndarray, m: int) -> None:
        """Update the running statistics in place (the buffers are shared by reference)."""
        mom = self.momentum
        rm, rv = self._buffers["running_mean"], self._buffers["running_var"]
        rm[...] = mom * mean + (1 - mom) * rm
        rv[...] = mom * var * (m / (m - 1)) + (1 - mom) * rv
        self._buffers["num_batches_tracked"][...] += 1

    def backward(self, dy: np.ndarray) -> np.ndarray:
        r"""dy (N, C, ...) -> dx (N, C, ...); fills grads "weight" and "bias".

        .. math::
            \frac{\partial L}{\partial\gamma} = \textstyle\sum_m dY_m \hat X_m, \quad
            \frac{\partial L}{\partial\beta} = \textstyle\sum_m dY_m, \quad
            G = \gamma\, dY,

            dX = \frac{1}{\sqrt{\sigma^2+\epsilon}}\Big(G - \tfrac{1}{M}\textstyle\sum_m G_m
                 - \hat X \, \tfrac{1}{M}\textstyle\sum_m G_m \hat X_m\Big) \ \text{(batch statistics)},
            \qquad dX = \frac{G}{\sqrt{\hat\sigma^2+\epsilon}} \ \text{(running statistics)}.
        """
        check_grad_output(self, dy)
        cache = self._cache
        dy2 = self._to_rows(dy)
        xhat = cache.xhat
        self._grads["weight"] = (dy2 * xhat).sum(axis=0)
        self._grads["bias"] = dy2.sum(axis=0)
        g = dy2 * self._params["weight"]
        if cache.batch_stats:
            # The batch mean and variance depend on every row: two column means correct for that.
            g = g - g.mean(axis=0) - xhat * (g * xhat).mean(axis=0)
        dx2 = g * cache.inv_std
        self._cache = None
        return self._from_rows(dx2, dy.shape)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) or (N, C, L), ``torch.nn.BatchNorm1d``; see :class:`_BatchNorm`."""
    _ndim = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (N, C, H, W), ``torch.nn.BatchNorm2d``; see :class:`_BatchNorm`."""
    _ndim = (4,)
