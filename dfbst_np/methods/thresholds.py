r"""What DST and DFBST share: a forward mask from learned per-row thresholds t.

.. math::
    M_{ij} = H(|W_{ij}| - \tau_i), \quad \tau_i = |t_i| \text{ (dfbst) or } t_i \text{ (dst)}; \qquad
    P = \alpha \sum_i e^{-t_i}

with the reset rule (t <- 0 when M keeps <= 1 % of the layer) and the
straight-through gradient rule for dW and dt (SPEC section 1). The fast
hooks wrap :mod:`dfbst_np.sparse.mask_rule`, the textbook hooks
:mod:`dfbst_np.textbook`; both rules are given the Method, and ask its ``abs_threshold``.
"""
from __future__ import annotations


from .. import textbook as tb
from ..sparse.mask_rule import forward_mask, layer_grads, threshold_penalty
from ..sparse.step import long_tailed
from .fast import FastRule
from .textbook_rule import TextbookRule


def add_threshold_penalty(layers, alpha: float, penalty) -> float:
    """alpha * sum exp(-t) over every layer: its value; its gradient is added to each dt."""
    total = 0.0
    for _, layer in layers:
        value, grad = penalty(layer.params["threshold"], alpha)
        total += value
        layer.set_grad("threshold", layer.grads["threshold"] + grad)
    return total


class FastThresholds(FastRule):
    """The fast hooks of a threshold method (:mod:`dfbst_np.sparse.mask_rule`)."""

    def forward_mask(self, layer, w2):
        return forward_mask(w2, layer.params["threshold"], self.method)

    def mask_inputs(self, layer) -> tuple:
        return (layer.params["threshold"],)

    def grads(self, layer, A, fm):
        s = layer.settings
        dW, dt = layer_grads(A, layer.weight2d, layer.params["threshold"], fm, self.method,
                             s.h, s.float32_masks, overwrite_a=True)
        return dW, {"threshold": dt}

    def alpha_term(self, trainer) -> float:
        return add_threshold_penalty(trainer.layers, trainer.alpha, threshold_penalty)


class TextbookThresholds(TextbookRule):
    """The textbook hooks of a threshold method (:mod:`dfbst_np.textbook`)."""

    def new_state(self, layer):
        if layer.settings.h is not long_tailed:
            raise ValueError(f"{layer.describe()}: the textbook implementation knows only the "
                             f"long-tailed estimator, got {layer.settings.estimator!r}")
        return super().new_state(layer)

    def forward_mask(self, layer, W):
        t = layer.params["threshold"]
        M, t_new = tb.forward_mask(W, t, self.method)
        t[...] = t_new                    # the layer owns t: the reset rule writes it back
        return M

    def grads(self, layer, A, M):
        dW, dt = tb.layer_grads(A, layer.weight2d, layer.params["threshold"], M, self.method,
                                layer.settings.float32_masks)
        return dW, {"threshold": dt}

    def alpha_term(self, trainer) -> float:
        return add_threshold_penalty(trainer.layers, trainer.alpha, tb.threshold_penalty)
