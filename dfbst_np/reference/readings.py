r"""One-line readings of a first divergence: which rule of SPEC it points at.

Each reading tests one hypothesis against the numbers of the diverging step
(dfbst_np's, the user's, and the state both started from), in SPEC's symbols:
for example, a D that equals H(|dW| - u) instead of H(|Ghat| - u) is "no row
normalisation". Where no hypothesis fits, the reading says which stage and
quantity to look at. Nothing here changes a verdict.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

from .. import methods
from .. import textbook as tb
from .coverage import density_before_reset
from .verdict import Divergence, layer_of


def _close(a, b, rtol: float = 1e-6) -> bool:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(float(np.abs(b).max(initial=0.0)), 1e-300)
    return a.shape == b.shape and float(np.abs(a - b).max(initial=0.0)) <= rtol * scale


def _rows(W: np.ndarray) -> np.ndarray:
    return W.reshape(W.shape[0], -1)


def _first_layer(bad: List[Divergence], suffix: Optional[str] = None) -> Optional[str]:
    for r in bad:
        if r.layer is not None and (suffix is None or r.quantity.endswith(suffix)):
            return r.layer
    return None


def _read_forward_mask(layer: str, before, ours, theirs, method: str) -> str:
    M_ours, M_theirs = ours["mask"][f"{layer}.mask"], theirs["mask"][f"{layer}.mask"]
    W = _rows(before[f"{layer}.weight"])
    t = before[f"{layer}.threshold"]
    rows = np.nonzero(np.any(_rows(M_ours) != _rows(M_theirs), axis=1))[0]
    if density_before_reset(W, t, method) <= tb.RESET_DENSITY:
        return ("the reset rule: M = H(|W| - |t|) keeps at most 1 % here, so t is set to 0 and M "
                "recomputed with it")
    # the other method's threshold: t where SPEC has |t| (dfbst), |t| where it has t (dst)
    rule, other = (("thresholds t vs |t|", t) if methods.get(method).abs_threshold
                   else ("thresholds |t| vs t", np.abs(t)))
    if np.array_equal(_rows(M_theirs), tb.H(np.abs(W) - other[:, None])):
        neg = "t < 0 rows" if np.all(t[rows] < 0) else "rows " + str(rows[:5].tolist())
        return f"{rule} ({neg})"
    return f"M = H(|W| - |t|) differs in rows {rows[:5].tolist()} (the threshold or the reset rule)"


def _dmask_candidates(dW: np.ndarray, u: np.ndarray) -> Dict[str, np.ndarray]:
    """The backward masks of plausible slips, keyed by their reading."""
    l2 = np.sqrt((dW ** 2).sum(axis=1, keepdims=True))
    total = np.abs(dW).sum()
    Ghat = np.abs(tb.row_normalise(dW))
    return {
        "no row normalisation: D = H(|dW| - u)": tb.H(np.abs(dW) - u),
        "L2 row normalisation instead of L1": tb.H(np.abs(np.divide(dW, l2, out=np.zeros_like(dW),
                                                                    where=l2 != 0)) - u),
        "the whole layer's sum of |dW| instead of each row's": tb.H(np.abs(dW) / (total or 1.0) - u),
        "D with |u| instead of u": tb.H(Ghat - np.abs(u)),
        "D = H(u - |Ghat|), the comparison inverted": tb.H(u - Ghat),
    }


def _read_dmask_values(dW: np.ndarray, u: np.ndarray, D: np.ndarray, where=None) -> str:
    """Which slip's D equals the user's D (compared only ``where``, if given), or ''."""
    for reading, D_alt in _dmask_candidates(dW, u).items():
        if np.array_equal(D[where], D_alt[where]) if where is not None else np.array_equal(D, D_alt):
            return reading
    return ""


def _read_dmask(layer: str, ours, theirs, before) -> str:
    dW = _rows(ours["grad"][f"{layer}.weight"])
    u = before[f"{layer}.dthreshold"][:, None]
    D = _rows(theirs["mask"][f"{layer}.dmask"])
    # only where dW != 0 does D change what the optimiser applies
    D_spec = _rows(ours["mask"][f"{layer}.dmask"])
    if np.array_equal(D[dW != 0], D_spec[dW != 0]):
        return ("D differs only where dW = 0 (H(|Ghat| - u) with Ghat = 0 there: H(-u)); the "
                "update is the same")
    return (_read_dmask_values(dW, u, D, dW != 0)
            or "the backward mask D = H(|Ghat| - u), Ghat = dW / sum_j |dW_ij|")


def _read_inferred_dmask(first: Divergence, ours, theirs, before) -> str:
    """The user's D read off the used gradient (zero where D dropped), when M is not exposed."""
    layer = first.layer
    dW = ours["grad"].get(f"{layer}.weight")
    used = theirs["used_grad"].get(f"{layer}.weight")
    u = before.get(f"{layer}.dthreshold")
    if dW is None or used is None or u is None:
        return ""
    dW, used = _rows(dW), _rows(used)
    known = dW != 0
    D_theirs = (used != 0).astype(dW.dtype)
    if np.array_equal(D_theirs[known], (_rows(ours["used_grad"][f"{layer}.weight"]) != 0)[known]):
        return ""                   # your D is SPEC's: the difference is elsewhere
    reading = _read_dmask_values(dW, u[:, None], D_theirs, known)
    return ("your backward mask D (read off the gradients you applied): "
            + (reading or "differs from H(|Ghat| - u), Ghat = dW / sum_j |dW_ij|"))


def _read_used_grad(bad: List[Divergence], ours, theirs, first: Optional[Divergence] = None,
                    before=None) -> str:
    a, b = ours["used_grad"], theirs["used_grad"]
    if first is not None and first.quantity.endswith(".dthreshold") and \
            first.note.startswith("present only in your code"):
        zeros = not np.any(b[first.quantity])
        return ("u has " + ("a zero gradient" if zeros else "a gradient") + " in your code on a "
                "step without the beta term, where SPEC's u has none and the optimiser leaves u "
                "alone" + (" (zero_grad(set_to_none=False) leaves zeros, which weight decay and "
                           "momentum then apply)" if zeros else ""))
    common = [k for k in a if k in b and a[k].shape == b[k].shape]
    if first is not None and first.quantity.endswith(".weight") and before is not None:
        inferred = _read_inferred_dmask(first, ours, theirs, before)
        if inferred:
            return inferred
    num = sum(float(np.vdot(a[k], b[k])) for k in common)
    den = sum(float(np.vdot(a[k], a[k])) for k in common)
    c = num / den if den else float("nan")
    if common and all(_close(b[k], c * a[k], 1e-9) for k in common):
        return (f"every used gradient is {c:.6g} x dfbst_np's: the clipping coefficient differs "
                "(clipping before the backward mask, or another norm)")
    w = [r.quantity for r in bad if r.stage == "used_grad"]
    if w and all(q.endswith(".weight") for q in w):
        return "the weight gradients the optimiser applied are not dW * D"
    return "the gradients the optimiser applied (the backward mask D, then clipping)"


def _read_update(first: Divergence, before, ours, theirs, settings, lr) -> str:
    q = first.quantity
    pname = q[:-len(".momentum_buffer")] if q.endswith(".momentum_buffer") else q
    if pname in before and q == pname:
        shift = theirs["update"][q] - ours["update"][q]
        wd = settings["weight_decay"]
        if wd and _close(shift, lr * wd * before[pname], 1e-4):
            what = "thresholds" if pname.endswith(("threshold", "dthreshold")) else pname
            return f"no weight decay on {what} (SPEC: every parameter with a gradient, thresholds included)"
    if q.endswith(".momentum_buffer") and pname.endswith(".weight"):
        D = ours.get("mask", {}).get(f"{layer_of(pname)}.dmask")
        a, b = ours["update"].get(q), theirs["update"].get(q)
        if D is not None and a is not None and b is not None and \
                _close(b, a * D.reshape(a.shape), 1e-9) and not _close(b, a, 1e-9):
            return (f"your momentum buffer of {pname} is SGD's times D: multiplied by D after the "
                    "optimiser's step (SPEC: SGD's buffer, which already gets dW * D, unchanged)")
    return "the optimiser update (SGD with momentum and weight decay, learning rate)"


def _t_in_step(before, layer: str, method: str) -> Optional[np.ndarray]:
    """t as the step used it: after the reset rule of the forward (t = 0 there)."""
    t = before.get(f"{layer}.threshold")
    W = before.get(f"{layer}.weight")
    if t is None or W is None or not methods.get(method).threshold_mask:
        return t
    return tb.forward_mask(_rows(W), t, method)[1]


def _thresholds(before, method: str) -> Dict[str, np.ndarray]:
    return {k: _t_in_step(before, k[:-len(".threshold")], method)
            for k in before if k.endswith(".threshold")}


def _alpha_abs_loss(before, alpha: float, method: str) -> float:
    """How much alpha * sum exp(-|t|) exceeds SPEC's alpha * sum exp(-t)."""
    return alpha * sum(float(np.sum(np.exp(-np.abs(t)) - np.exp(-t)))
                       for t in _thresholds(before, method).values())


def _read_dt_alpha(diff: np.ndarray, t: np.ndarray, alpha: float) -> str:
    """The alpha term's rule that explains dt(theirs) - dt(ours), or ''."""
    if not alpha or not diff.size:
        return ""
    # torch's abs has derivative 0 at 0, hence sign(0) = 0 here
    hypotheses = {
        "the alpha term is alpha * sum exp(-|t|) in your code; SPEC's is alpha * sum exp(-t) "
        "(t itself, no abs)": alpha * (np.exp(-t) - np.sign(t) * np.exp(-np.abs(t))),
        "dt lacks the alpha term's gradient -alpha * exp(-t)": alpha * np.exp(-t),
        "the alpha term's gradient has the wrong sign (SPEC: -alpha * exp(-t))": 2 * alpha * np.exp(-t),
        "the alpha term is alpha * sum exp(t) in your code; SPEC's is alpha * sum exp(-t)":
            alpha * (np.exp(t) + np.exp(-t)),
    }
    for reading, expected in hypotheses.items():
        scale = float(np.abs(expected).max(initial=0.0))
        if scale and float(np.abs(diff - expected).max()) <= 1e-4 * scale:
            return reading
    return ""


def _read_grad(first: Divergence, bad: List[Divergence], ours, theirs, before, method,
               alpha: float = 0.0) -> str:
    q, layer = first.quantity, first.layer
    if q.endswith(".dthreshold"):
        if first.note.startswith("present only in your code"):
            return ("the beta term: u has a gradient in your code on a step without the beta term "
                    "(SPEC: from epoch 2 on, never at batch index 0)")
        if first.note.startswith("present only in dfbst_np"):
            return ("the beta term: u has no gradient in your code on a step with the beta term "
                    "(epoch >= 2, index != 0: beta V_prev, V_prev still attached to u)")
        return "the beta term: d(beta V_prev)/du through the estimator h of D"
    names = {r.quantity for r in bad if r.stage == "grad" and r.layer == layer}
    if q.endswith(".threshold") and f"{layer}.weight" not in names:
        t = _t_in_step(before, layer, method)
        diff = theirs["grad"][q] - ours["grad"][q]
        alpha_reading = _read_dt_alpha(diff, t, alpha) if t is not None else ""
        if alpha_reading:
            return alpha_reading
        ratio = diff / np.exp(-t) if t is not None else None
        if ratio is not None and ratio.size and ratio[0] != 0 and _close(ratio, np.full_like(ratio, ratio[0])):
            return "dt differs by a multiple of exp(-t): the alpha term alpha * sum exp(-t)"
        zero = np.nonzero(diff)[0]
        if t is not None and zero.size and np.all(t[zero] == 0):
            return "dt differs only where t = 0: s(0) must be +1 (abs() has derivative 0 there)"
        return "dt: -s(t) sum_j A W h(|W| - |t|) (the sign s(t) or the estimator h)"
    if q.endswith(".weight") and f"{layer}.bias" in ours["grad"] and f"{layer}.bias" not in names:
        return ("dW differs while the bias gradient agrees: the straight-through term "
                "|W| h(|W| - |t|) (the estimator h or the mask's derivative)")
    return f"the gradient of {q} (the backward of the loss)"


#: Readings that name a place, not a rule that the numbers were checked against:
#: a small error's float32 question comes before them.
GENERIC = ("the loss differs by", "the forward differs;", "dt: -s(t)", "the gradient of", "the forward differs",
           "the optimiser update", "the gradients the optimiser applied", "the weight gradients",
           "the beta term: d(beta", "M = H(", "the backward mask D", "dW differs while")

#: Relative errors up to this are the size float32 rounding leaves in a
#: float64 run (masks made by ``.float()``: SPEC, "Float32 masks").
FLOAT32_SIZE = 1e-5


def _read_start(first: Divergence, ours, theirs, prev_masks) -> str:
    q = first.quantity
    where = ("changed after the previous step's optimiser update and before this step's (your "
             "step after opt.step() or before it, or your loop)")
    if q.endswith(".momentum_buffer"):
        param = q[:-len(".momentum_buffer")]
        left, now = ours["start"].get(q), theirs["start"].get(q)
        key = f"{layer_of(param)}.dmask"
        # D of the previous step (after its opt.step()) or of this one (before this opt.step())
        for when, D in (("the previous step's", prev_masks.get(key)), ("this step's", ours.get("mask", {}).get(key))):
            if param.endswith(".weight") and D is not None and left is not None and now is not None \
                    and _close(now, left * D.reshape(left.shape), 1e-9) and not _close(now, left, 1e-9):
                return (f"the momentum buffer of {param} was multiplied by {when} D outside the "
                        "optimiser's step; SPEC's buffers change only in SGD's update, which gets dW * D")
        return (f"the momentum buffer of {param} was {where}; SPEC's buffers change only in "
                "the optimiser's update")
    return f"{q} was {where}; SPEC changes parameters only in the optimiser's update"


def _read_forward_unexposed(before, method: str) -> str:
    """Where M's rules are at stake in this step, when the user's M is not exposed."""
    found = []
    for name in [k[:-len(".threshold")] for k in before if k.endswith(".threshold")]:
        W, t = _rows(before[f"{name}.weight"]), before[f"{name}.threshold"]
        x = np.abs(W) - tb.effective_threshold(t, method)[:, None]
        density = float(tb.H(x).mean())          # density_before_reset, from x already at hand
        if tb.RESET_DENSITY < density <= 0.05:
            found.append(f"{name} keeps {density:.1%} (SPEC resets at <= 1 % only)")
        elif density <= tb.RESET_DENSITY:
            found.append(f"{name} keeps {density:.1%} (SPEC resets t to 0 and recomputes M)")
        if np.any(x == 0):
            found.append(f"{name} has weights with |W| = |t| (H(0) = 0: strict >)")
        if methods.get(method).abs_threshold and np.any(t < 0):
            found.append(f"{name} has t < 0 (M uses |t|)")
    where = "; ".join(found[:8])
    return ("the forward differs; your masks M are not exposed, so they were not compared: the "
            "forward mask M = H(|W| - |t|) or its reset rule (mean(M) <= 1 %)"
            + (f"; in this step {where}" if where else ""))


def explain(first: Divergence, bad: List[Divergence], before: Dict[str, np.ndarray], ours, theirs,
            stats, settings, method: str, prev_V: Optional[float], lr: float,
            mask_dtype: str = "", twin_f32: Optional[bool] = False,
            f32_hints=("float32_masks=True", "float32_masks=False"), prev_masks=None) -> None:
    """Set ``first.layer`` (for network-level quantities) and ``first.reading``.

    A reading is hedged by size: a difference of float32 rounding's size
    (max relative error <= :data:`FLOAT32_SIZE`) in a comparison that is not
    0/1 first asks whether the user's masks are float32, since that, not a
    rule, is the usual cause; the rule that would fit otherwise follows.
    """
    stage, q = first.stage, first.quantity
    if first.layer is None:
        first.layer = _first_layer(bad, ".mask" if q == "logits" else None) or _first_layer(bad)
    reading = ""
    try:
        if stage == "forward" and q == "logits":
            layer = _first_layer([r for r in bad if r.stage == "mask"], ".mask")
            if layer is not None and methods.get(method).threshold_mask:
                reading = (f"{layer}'s forward mask M, "
                           + _read_forward_mask(layer, before, ours, theirs, method))
            elif methods.get(method).threshold_mask and not any(k.endswith(".mask") for k in theirs["mask"]):
                reading = _read_forward_unexposed(before, method)
            else:
                reading = "the forward differs with identical masks M: the layer products or the architecture"
        elif stage == "forward" and q == "loss":
            diff = float(theirs["forward"]["loss"] - ours["forward"]["loss"])
            beta = settings["beta"] * (prev_V or 0.0)
            if stats.beta_term == 0 and prev_V is not None and abs(diff - beta) <= 1e-6 * abs(beta):
                reading = (f"the beta term: your loss adds beta * V_prev = {beta:.6g} where SPEC "
                           "does not (epoch 1 or batch index 0)")
            elif stats.beta_term and abs(diff + stats.beta_term) <= 1e-6 * stats.beta_term:
                reading = "the beta term is missing from your loss (epoch >= 2, index != 0)"
            elif stats.alpha_term and abs(diff + stats.alpha_term) <= 1e-6 * stats.alpha_term:
                reading = "the alpha term alpha * sum exp(-t) is missing from your loss"
            elif (abs_gap := _alpha_abs_loss(before, settings["alpha"], method)) and \
                    abs(diff - abs_gap) <= 1e-6 * abs(abs_gap):
                reading = ("the alpha term is alpha * sum exp(-|t|) in your loss; SPEC's is "
                           "alpha * sum exp(-t) (t itself: they differ where t < 0)")
            elif (u_gap := settings["alpha"] * sum(float(np.sum(np.exp(-v))) for k, v in before.items()
                                                   if k.endswith(".dthreshold"))) and \
                    abs(diff - u_gap) <= 1e-6 * u_gap:
                reading = "your loss adds alpha * sum exp(-u): SPEC's alpha term is on t only"
            elif stats.ce and (n := ours["forward"]["logits"].shape[0]) > 1 and \
                    abs(diff - (n - 1) * stats.ce) <= 1e-6 * (n - 1) * stats.ce:
                reading = ("your cross-entropy is the batch's sum; SPEC's is its mean (reduction="
                           "'mean')")
            else:
                reading = f"the loss differs by {diff:.6g} while the logits agree: CE, alpha or beta term"
        elif stage == "start":
            reading = _read_start(first, ours, theirs, prev_masks or {})
        elif stage == "grad":
            reading = _read_grad(first, bad, ours, theirs, before, method, settings["alpha"])
        elif stage == "mask" and q.endswith(".dmask"):
            reading = _read_dmask(first.layer, ours, theirs, before)
        elif stage == "mask":
            reading = _read_forward_mask(first.layer, before, ours, theirs, method)
        elif stage == "used_grad":
            reading = _read_used_grad(bad, ours, theirs, first, before)
        elif stage == "update":
            reading = _read_update(first, before, ours, theirs, settings, lr)
    except (KeyError, ValueError):
        # a reading is a hint; quantities it needs may be absent on one side
        reading = ""
    if first.stage not in ("mask", "start") and not first.note and 0 < first.max_rel <= FLOAT32_SIZE \
            and (not reading or reading.startswith(GENERIC)):
        used = f" (this run's twin: {mask_dtype})" if mask_dtype else ""
        if twin_f32:
            ask, hint = "float64, not float32 as the twin's", f32_hints[1]
        else:
            ask, hint = "float32, as (x > 0).float() makes them", f32_hints[0]
        reading = (f"small, {first.max_rel:.1e} relative, the size of float32 rounding: are your "
                   f"masks {ask}{used}? If so, pass {hint}"
                   + (f"; if not: {reading}" if reading else ""))
    first.reading = f"{layer_of(q) or q}: {reading}" if reading and first.layer is None else reading
