r"""``dfbst``: Dynamic Forward and Backward Sparse Training (Pote et al., ACML 2022).

DST's forward mask with tau = |t|, plus a learned backward mask on every
weight gradient (SPEC "The backward mask"):

.. math::
    \hat G_{ij} = \frac{dW_{ij}}{\sum_k |dW_{ik}|}, \quad D = H(|\hat G| - u_i), \quad
    dW \leftarrow dW \odot D, \quad V = \operatorname{std}(dW \odot D)

and beta * V_prev in the next step's loss (from epoch 2 on, never at batch
index 0), through which u learns. The fast hooks wrap
:func:`dfbst_np.sparse.backward_mask.backward_mask`, the textbook hooks
:func:`dfbst_np.textbook.backward_mask`.
"""
from __future__ import annotations

from .. import textbook as tb
from ..sparse.backward_mask import BackwardMask, backward_mask
from ..sparse.entries import Entries, Pattern
from .base import Method, StepInfo
from .thresholds import FastThresholds, TextbookThresholds


class RunState:
    """The trainer's DFBST state: ``prev``, the previous step's BackwardMask (V, dV/du)."""

    def __init__(self) -> None:
        self.prev = None


def textbook_backward_mask(dWs, us, scale: float, estimator, float32_masks: bool) -> BackwardMask:
    """:func:`dfbst_np.textbook.backward_mask` on Entries, as a BackwardMask (the
    textbook knows only the long-tailed estimator, which its layers checked)."""
    Ds, masked, V, dV_du = tb.backward_mask([g.dense() for g in dWs], us, scale=scale,
                                            float32_masks=float32_masks)
    return BackwardMask([Pattern(keep=D != 0) for D in Ds], [Entries(g) for g in masked], V,
                        dV_du, [g.dtype for g in masked])


class BackwardMaskHooks:
    """The trainer hooks of DFBST, over one backward-mask rule (``self.rule``)."""

    rule = staticmethod(backward_mask)

    def default_weight_grad(self, settings) -> str:
        return settings.weight_grad        # "exact", or "predicted" (the approximation)

    def new_run_state(self) -> RunState:
        return RunState()

    def beta_term(self, trainer, info: StepInfo) -> float:
        """beta * V_prev, and u's gradient d(beta V_prev)/du; on other steps u has none."""
        prev = trainer.method_state.prev
        if info.epoch < 2 or info.index == 0 or prev is None:
            return 0.0
        for (_, layer), grad_u in zip(trainer.layers, prev.grad_u):
            layer.set_grad("dthreshold", grad_u)
        return trainer.beta * prev.V

    def gradient_mask(self, trainer):
        """D on every layer's dW, kept with V and dV/du for the next step."""
        layers = trainer.layers
        s = layers[0][1].settings          # model-wide: the Trainer checked they agree
        bm = self.rule([layer.loss_grad() for _, layer in layers],
                       [layer.params["dthreshold"] for _, layer in layers],
                       scale=trainer.beta, estimator=s.h, float32_masks=s.float32_masks)
        for (_, layer), D in zip(layers, bm.patterns):
            layer.set_backward_mask(D)
        trainer.method_state.prev = bm
        return {f"{name}.weight": g for (name, _), g in zip(layers, bm.masked)}

    def statistic(self, trainer):
        prev = trainer.method_state.prev
        return None if prev is None else prev.V


class FastDFBST(BackwardMaskHooks, FastThresholds):
    """DFBST's fast hooks."""


class TextbookDFBST(BackwardMaskHooks, TextbookThresholds):
    """DFBST's textbook hooks."""

    rule = staticmethod(textbook_backward_mask)


METHOD = Method(
    "dfbst", title="DFBST", paper="Pote, Ganaie, Hassan and Khare, \"Dynamic Forward and Backward Sparse "
                   "Training (DFBST)\", ACML 2022, PMLR 189:848-863",
    fast=FastDFBST(), textbook=TextbookDFBST(), params=("threshold", "dthreshold"),
    threshold_mask=True, abs_threshold=True, learns_backward_mask=True,
    weight_grads=("exact", "predicted"),
    defaults=dict(lr=0.1, momentum=0.9, weight_decay=1e-4, alpha=5e-6, beta=0.1, clip_norm=1.0,
                  milestones=(80, 120), gamma=0.1, epochs=160, batch_size=64),
    doc="M = H(|W| - |t|); D = H(|Ghat| - u); loss + alpha sum exp(-t) + beta V_prev.")
