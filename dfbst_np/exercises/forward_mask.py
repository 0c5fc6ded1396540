r"""Exercise 1: the forward mask and the reset rule.

The learner writes ``forward_mask(W, t, method) -> (M, t_new)``:

.. math::
    M_{ij} = H(|W_{ij}| - \tau_i), \quad \tau = |t| \text{ (dfbst)}, \; t \text{ (dst)}; \qquad
    \text{if } \operatorname{mean}(M) \le 0.01: \; t \leftarrow 0, \; M = H(|W|)

:func:`check_forward_mask` compares it with :func:`dfbst_np.textbook.forward_mask`.
"""
from __future__ import annotations

import numpy as np

from .. import textbook as tb
from ._check import Case, Mistake, Result, run_checks


def _cases():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((6, 20))
    exactly = np.zeros((10, 10))
    exactly.flat[::7] = 0.1
    exactly[3, 4] = 1.0                       # the one entry above t = 0.5: density 1 %
    reset = W.copy()
    reset[0, :3] = 0.0                        # exact zeros stay pruned after the reset
    tie = np.array([[0.5, -0.5, 0.2, 0.9], [0.3, 0.7, -0.3, 0.1]])
    half = np.full((10, 20), 0.1)             # one entry of 200 above t = 0.5: density 0.5 %
    half[2, 7] = -1.0
    two = np.full((10, 10), 0.1)              # two entries of 100 above t = 0.5: density 2 %
    two[1, 1], two[8, 3] = 1.0, -2.0
    return [
        Case("random W, t > 0 (dfbst)", (W, np.full(6, 0.6), "dfbst")),
        Case("t < 0 (dfbst)", (W, np.linspace(-1.0, -0.2, 6), "dfbst")),
        Case("t < 0 (dst)", (W, np.linspace(-1.0, 0.8, 6), "dst")),
        Case("|W| equal to the threshold", (tie, np.array([0.5, 0.3]), "dfbst")),
        Case("reset: density <= 1 %", (reset, np.full(6, 5.0), "dfbst")),
        Case("reset: density exactly 1 %", (exactly, np.full(10, 0.5), "dfbst")),
        Case("reset: density 0.5 %, one weight kept", (half, np.full(10, 0.5), "dfbst")),
        Case("no reset: density 2 %", (two, np.full(10, 0.5), "dfbst")),
        Case("reset, one dense row", (np.abs(W) + 0.1, np.r_[0.0, np.full(5, 9.0)], "dst")),
    ]


def _mask(W, tau, strict=True, absolute=True):
    x = (np.abs(W) if absolute else W) - tau[:, None]
    return ((x > 0) if strict else (x >= 0)).astype(W.dtype)


def _variant(tau_of=None, strict=True, absolute=True, reset="layer"):
    """forward_mask with one thing changed (None: the textbook's choice)."""
    def fn(W, t, method):
        tau = (tau_of or tb.effective_threshold)(t, method)
        M = _mask(W, tau, strict, absolute)
        fire = {"layer": M.mean() <= tb.RESET_DENSITY, "strict": M.mean() < tb.RESET_DENSITY,
                "never": False, "keep_t": M.mean() <= tb.RESET_DENSITY,
                "ones": M.mean() <= tb.RESET_DENSITY, "sum": M.sum() <= tb.RESET_DENSITY,
                "ten": M.mean() <= 0.1, "mask_kept": M.mean() <= tb.RESET_DENSITY,
                }[reset] if reset != "row" else False
        if fire and reset == "mask_kept":
            return M, np.zeros_like(t)
        if reset == "row":
            rows = M.mean(axis=1) <= tb.RESET_DENSITY
            t = np.where(rows, 0.0, t)
            return _mask(W, (tau_of or tb.effective_threshold)(t, method), strict, absolute), t
        if fire and reset == "keep_t":
            return _mask(W, np.zeros_like(t), strict, absolute), t.copy()
        if fire and reset == "ones":
            return np.ones_like(W), np.zeros_like(t)
        if fire:
            t = np.zeros_like(t)
            M = _mask(W, (tau_of or tb.effective_threshold)(t, method), strict, absolute)
        return M, t.copy()
    return fn


MISTAKES = [
    Mistake(_variant(tau_of=lambda t, m: t),
            "DFBST compares |W| with |t|: a negative threshold must act like a positive one (tau = |t|)."),
    Mistake(_variant(tau_of=lambda t, m: np.abs(t)),
            "DST compares |W| with t itself, not |t|: a negative DST threshold keeps every weight."),
    Mistake(_variant(absolute=False),
            "compare |W|, not W, with the threshold: negative weights were pruned."),
    Mistake(_variant(reset="strict"),
            "the reset did not fire at density exactly 1 %: the rule is mean(M) <= 0.01, not < 0.01."),
    Mistake(_variant(reset="sum"),
            "the reset rule is on the density mean(M), the fraction of W kept, not on M.sum(), the number "
            "kept: mean(M) <= 0.01."),
    Mistake(_variant(reset="never"), "the reset did not fire at density <= 1 %."),
    Mistake(_variant(reset="ten"),
            "the reset fired at a density above 1 %: it fires only when mean(M) <= 0.01 (tb.RESET_DENSITY)."),
    Mistake(_variant(reset="mask_kept"),
            "after the reset, compute M again with t = 0 (tau = 0): yours returned the mask of the old t."),
    Mistake(_variant(reset="keep_t"),
            "after the reset, return t_new = 0: the reset changes the thresholds, not only the mask."),
    Mistake(_variant(reset="ones"),
            "after the reset M = H(|W| - 0): a weight that is exactly 0 stays pruned (M is not all ones)."),
    Mistake(_variant(reset="row"),
            "the reset looks at the whole layer's density (the mean of all of M), not at each row."),
    Mistake(_variant(strict=False),
            "H is strict (H(0) = 0): a weight with |W| equal to the threshold must be pruned (use >, not >=)."),
]


def _outputs(value):
    M, t_new = value
    return {"M": M, "t_new": t_new}


def check_forward_mask(forward_mask, quiet: bool = False) -> Result:
    """Check ``forward_mask(W, t, method) -> (M, t_new)`` against the textbook; print a hint.

    :func:`dfbst_np.textbook.forward_mask` is hidden while ``forward_mask`` runs.
    """
    return run_checks(forward_mask, tb.forward_mask, _cases(), MISTAKES, _outputs, "forward_mask",
                      hide=[(tb, "forward_mask")], quiet=quiet)
