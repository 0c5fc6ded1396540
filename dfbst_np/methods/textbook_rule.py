r"""The textbook implementation's layer hooks: :mod:`dfbst_np.textbook` with dense products.

Forward:   M from the method's textbook rule,  Y = X (W * M)^T     (tb.masked_forward)
Backward:  A = dY^T X,  dX = dY (W * M)   (tb.masked_backward),  then the method's
           textbook gradient rule on A ("mask" mode: on A * M, the kept entries only).

A method subclasses :class:`TextbookRule` and supplies ``forward_mask(layer, W)
-> M`` and ``grads(layer, A, M) -> (dW, {param: grad})`` over plain arrays.
Same numbers as the fast implementation (float64: 1e-12 relative), slower.
"""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

from .. import textbook as tb
from ..sparse.entries import Entries
from .base import Backward, Implementation, StepPlan


class TextbookState:
    """The textbook implementation's per-layer scratch: M of the last forward."""

    def __init__(self) -> None:
        self.M = None


class TextbookRule(Implementation):
    """The layer hooks of the textbook implementation (see the module docstring)."""

    kind = "textbook"

    def forward_mask(self, layer, W: np.ndarray) -> np.ndarray:
        """M (out, fan_in), 0/1 in W's dtype. Default: no mask (all ones)."""
        return np.ones_like(W)

    def grads(self, layer, A: np.ndarray, M: np.ndarray) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
        """dL/dW and the method's parameter gradients from A. Default: dW = A * M."""
        return A * M, {}

    def new_state(self, layer) -> TextbookState:
        return TextbookState()

    def mask(self, layer):
        M = layer.state.M
        return None if M is None or not self.method.masked else M.reshape(layer.weight.shape)

    def mask_nnz(self, layer) -> int:
        M = layer.state.M
        if M is None or not self.method.masked:
            return layer.weight.size
        return int(np.count_nonzero(M))

    def forward(self, layer, x2, transposed: bool, plan: StepPlan):
        W = layer.weight2d
        M = layer.state.M = self.forward_mask(layer, W)
        X = x2.T if transposed else x2
        Y = tb.masked_forward(X, W, M)
        return np.ascontiguousarray(Y.T) if transposed else Y

    def backward(self, layer, dy2, x2, transposed: bool, plan: StepPlan) -> Backward:
        mode = plan.weight_grad or self.default_weight_grad(layer.settings)
        if mode == "predicted":
            raise ValueError(f"{layer.describe()}: the predicted weight gradient is an "
                             f"approximation of the fast implementation; it has no textbook form")
        dY, X = (dy2.T, x2.T) if transposed else (dy2, x2)
        W, M = layer.weight2d, layer.state.M
        A, dX = tb.masked_backward(dY, X, W, M)
        if mode == "mask":
            A = A * M                    # only the kept entries are computed
        dW, grads = self.grads(layer, A, M)
        dx2 = None
        if plan.input_grad:
            dx2 = np.ascontiguousarray(dX.T) if transposed else dX
        return Backward(dx2, Entries(dW), grads, mode)
