"""Which branches of SPEC's rule a verification exercised (``report.coverage``).

A branch that never fired is a place where a bug would go unseen: the report
warns about each, and ``stress=True`` (:mod:`.stress`) moves a run into all.
The branches a method has follow from what it learns: a forward mask (t) or
none, a backward mask (u and the beta term) or none.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np

from .. import methods
from .. import textbook as tb
from .stress import masked_layer_names

#: The regions of the estimator h's input, as coverage names them.
REGIONS = ("|x| <= 0.4", "0.4 < |x| <= 1", "|x| > 1")


def estimator_regions(x: np.ndarray) -> Tuple[bool, bool, bool]:
    """Whether x has entries in each region of h: |x| <= 0.4, 0.4 < |x| <= 1, |x| > 1."""
    a = np.abs(x)
    return bool(np.any(a <= 0.4)), bool(np.any((a > 0.4) & (a <= 1))), bool(np.any(a > 1))


def density_before_reset(W: np.ndarray, t: np.ndarray, method: str) -> float:
    """mean(M) of ``M = H(|W| - tau)`` with t as it is: what decides whether the reset rule
    fires (at :data:`dfbst_np.textbook.RESET_DENSITY` or below). W is (out, fan_in)."""
    return float(tb.H(np.abs(W) - tb.effective_threshold(t, method)[:, None]).mean())


def _any_regions(xs) -> List[bool]:
    regions = [False] * 3
    for x in xs:
        regions = [a or b for a, b in zip(regions, estimator_regions(x))]
    return regions


class Coverage:
    """The branches of one verification, and which of them fired so far.

    ``method`` is a registered method's name; ``clipping`` whether the
    settings clip the gradient norm.
    """

    def __init__(self, method: str, clipping: bool) -> None:
        m = methods.get(method)
        self.method = method
        self.forward_mask = m.threshold_mask
        self.backward_mask = m.learns_backward_mask
        self.clipping = clipping
        self.seen: Dict[str, bool] = {key: False for key in self.branches()}
        self.prev_u_regions: Optional[List[bool]] = None
        self.prev_beta = False

    def branches(self) -> List[str]:
        keys = ["epoch 1", "epoch 2", "state carried between steps"]
        if self.forward_mask:
            keys += ["t < 0", "reset", "density 1-5 %"] + [f"h(t) {r}" for r in REGIONS]
        if self.backward_mask:
            keys += ["D dropped entries", "u < 0"] + [f"h(u) {r}" for r in REGIONS]
            keys += ["beta term on", "beta term off", "beta off after on"]
        if self.clipping:
            keys.append("clipping active")
        return keys

    def record(self, epoch: int, before, ours, grad_norm: float, clip_norm) -> None:
        """Mark what one step (its state ``before`` and dfbst_np's trace ``ours``) exercised."""
        for key, fired in self._fired(epoch, before, ours, grad_norm, clip_norm).items():
            self.seen[key] = self.seen[key] or fired

    def _fired(self, epoch, before, ours, grad_norm, clip_norm) -> Dict[str, bool]:
        fired = {"epoch 1": epoch == 1, "epoch 2": epoch >= 2,
                 "state carried between steps": bool(ours.get("start"))}
        layers = masked_layer_names(list(before))
        grads = ours["grad"]
        if self.forward_mask:
            fired.update(self._forward_mask_branches(before, grads, layers))
        if self.backward_mask:
            fired.update(self._backward_mask_branches(before, grads, ours["mask"], layers))
        if self.clipping:
            fired["clipping active"] = grad_norm > clip_norm
        return fired

    def _forward_mask_branches(self, before, grads, layers) -> Dict[str, bool]:
        fired = {"t < 0": any(np.any(before[f"{n}.threshold"] < 0) for n in layers)}
        reset = low = False
        xs = []
        for n in layers:
            W = before[f"{n}.weight"].reshape(before[f"{n}.weight"].shape[0], -1)
            t = before[f"{n}.threshold"]
            density = density_before_reset(W, t, self.method)
            _, t_used = tb.forward_mask(W, t, self.method)
            reset = reset or density <= tb.RESET_DENSITY
            low = low or tb.RESET_DENSITY < density <= 0.05
            # h(|W| - tau) where it reaches the gradient: entries with dW != 0
            x = np.abs(W) - tb.effective_threshold(t_used, self.method)[:, None]
            dW = grads.get(f"{n}.weight")
            xs.append(x if dW is None else x[dW.reshape(W.shape) != 0])
        fired["reset"], fired["density 1-5 %"] = bool(reset), bool(low)
        fired.update({f"h(t) {r}": v for r, v in zip(REGIONS, _any_regions(xs))})
        return fired

    def _backward_mask_branches(self, before, grads, masks, layers) -> Dict[str, bool]:
        fired = {
            "D dropped entries": any(np.any((masks[f"{n}.dmask"] == 0) & (grads[f"{n}.weight"] != 0))
                                     for n in layers if f"{n}.dmask" in masks),
            "u < 0": any(np.any(before[f"{n}.dthreshold"] < 0) for n in layers
                         if f"{n}.dthreshold" in before)}
        on = any(f"{n}.dthreshold" in grads for n in layers)
        fired["beta term on"], fired["beta term off"] = on, not on
        fired["beta off after on"] = self.prev_beta and not on
        # h(|Ghat| - u) of this step's values is used by the next beta term
        if on and self.prev_u_regions is not None:
            fired.update({f"h(u) {r}": v for r, v in zip(REGIONS, self.prev_u_regions)})
        xs = []
        for n in layers:
            dW, u = grads.get(f"{n}.weight"), before.get(f"{n}.dthreshold")
            if dW is None or u is None:
                continue
            rows = dW.reshape(dW.shape[0], -1)
            xs.append((np.abs(tb.row_normalise(rows)) - u[:, None])[rows != 0])
        self.prev_u_regions, self.prev_beta = _any_regions(xs), on
        return fired
