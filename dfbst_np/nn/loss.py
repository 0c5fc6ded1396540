"""Cross-entropy loss on logits, with a numerically stable log-softmax."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .checks import check_finite, check_input
from .init import as_float_dtype
from .module import Module


@dataclass
class CrossEntropyCache:
    """What CrossEntropyLoss.forward keeps: the softmax and the labels."""
    probs: np.ndarray       # (N, C)
    labels: np.ndarray      # (N,)


class CrossEntropyLoss(Module):
    r"""Mean cross-entropy of integer labels, ``torch.nn.CrossEntropyLoss()``.

    Shapes: logits z (N, C), labels (N,) ints in [0, C); loss a Python float.

    .. math::
        \log p_{nc} = z_{nc} - \max_k z_{nk} - \log \sum_k e^{z_{nk} - \max_k z_{nk}}, \qquad
        L = -\frac{1}{N} \sum_n \log p_{n, y_n}, \qquad
        \frac{\partial L}{\partial z} = \frac{p - \mathrm{onehot}(y)}{N}

    Subtracting the row maximum keeps every exponent <= 0, so logits of any
    finite size are safe; a loss that still comes out non-finite (only
    possible when the logits span more than the dtype's range) raises
    FloatingPointError.

    Parameters
    ----------
    dtype : {np.float32, np.float64}
        The logits dtype this loss accepts.
    """

    def __init__(self, dtype=np.float32) -> None:
        super().__init__()
        self.dtype = as_float_dtype(dtype, type(self).__name__)

    def __call__(self, logits: np.ndarray, labels: np.ndarray) -> float:
        return self.forward(logits, labels)

    def _check_labels(self, labels, n: int, c: int) -> None:
        who = self.describe()
        if not isinstance(labels, np.ndarray):
            raise TypeError(f"{who}: labels must be a numpy.ndarray of ints, got {type(labels).__name__}")
        if labels.dtype == np.bool_ or not np.issubdtype(labels.dtype, np.integer):
            raise TypeError(f"{who}: labels must have an integer dtype, got {labels.dtype.name}")
        if labels.shape != (n,):
            raise ValueError(f"{who}: labels must have shape ({n},) to match logits, got {labels.shape}")
        if labels.min() < 0 or labels.max() >= c:
            raise ValueError(f"{who}: labels must lie in [0, {c}), got values in "
                             f"[{labels.min()}, {labels.max()}]")

    def forward(self, logits: np.ndarray, labels: np.ndarray) -> float:
        """logits (N, C), labels (N,) -> mean loss (float)."""
        check_input(self, logits, (2,), self.dtype)
        n, c = logits.shape
        self._check_labels(labels, n, c)
        # exp of very negative logits underflows to 0, harmlessly; overflow means the
        # logits span more than the dtype's range, and check_finite reports that below.
        with np.errstate(under="ignore", over="ignore", invalid="ignore"):
            shifted = logits - logits.max(axis=1, keepdims=True)
            log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
            loss = -log_probs[np.arange(n), labels].mean()
            probs = np.exp(log_probs)
        check_finite(np.asarray(loss), f"{self.describe()}: loss")
        self._cache = CrossEntropyCache(probs=probs, labels=labels.copy())
        return float(loss)

    def backward(self) -> np.ndarray:
        """-> dL/dlogits (N, C)."""
        if self._cache is None:
            raise RuntimeError(f"{self.describe()}: backward called before forward")
        probs, labels = self._cache.probs, self._cache.labels
        n = probs.shape[0]
        dz = probs.copy()
        dz[np.arange(n), labels] -= 1
        dz /= n
        self._cache = None
        return dz
