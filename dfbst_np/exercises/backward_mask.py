r"""Exercise 3: the backward mask D, the statistic V and its gradient in u.

The learner writes ``backward_mask(dWs, us) -> (Ds, gs, V, dV_du)`` for a list
of layers:

.. math::
    \hat G_{ij} = \frac{dW_{ij}}{\sum_k |dW_{ik}|}, \quad D = H(|\hat G| - u_i), \quad
    g = dW \odot D, \quad V = \operatorname{std}(g), \quad
    \frac{\partial V}{\partial u_i} = -\sum_j \frac{\partial V}{\partial g_{ij}}\, dW_{ij}\,
        h(|\hat G_{ij}| - u_i)

:func:`check_backward_mask` compares it with
:func:`dfbst_np.textbook.backward_mask` (``scale=1``).
"""
from __future__ import annotations

import numpy as np

from .. import textbook as tb
from ._check import Case, Mistake, Result, run_checks


def _cases():
    rng = np.random.default_rng(2)
    dW1 = rng.standard_normal((4, 10)) * np.array([[1e-3], [1.0], [30.0], [0.2]])   # rows of any scale
    dW1[1, 2:5] = 0.0                                      # exact zeros: dropped even when u = 0
    dW2 = rng.standard_normal((3, 6))
    zero_row = dW2.copy()
    zero_row[1] = 0.0
    u1 = np.array([0.05, 0.1, 0.0, 0.2])
    return [
        Case("one layer, u = 0", ([dW1], [np.zeros(4)])),
        Case("one layer, u > 0", ([dW1], [u1])),
        Case("two layers, u > 0", ([dW1, dW2], [u1, np.full(3, 0.15)])),
        Case("a row of zeros", ([dW1, zero_row], [u1, np.full(3, 0.1)])),
    ]


def _variant(norm="l1", zero_rows="zero", strict=True, abs_g=True, ddof=1, per_layer=False,
             du_sign=-1.0, du_factor="dW", ste=True, v_of="g", centre=True, h_abs=True):
    def fn(dWs, us):
        Ds, zs = [], []
        for dW, u in zip(dWs, us):
            r = {"l1": np.abs(dW).sum(axis=1, keepdims=True),
                 "l2": np.sqrt((dW ** 2).sum(axis=1, keepdims=True)),
                 "none": np.ones((dW.shape[0], 1)),
                 "columns": np.abs(dW).sum(axis=0, keepdims=True)}[norm]
            if zero_rows == "zero":
                G = np.divide(dW, r, out=np.zeros_like(dW), where=r != 0)
            else:
                G = dW / r
            z = (np.abs(G) if abs_g else G) - u[:, None]
            zs.append(z if h_abs else G - u[:, None])
            Ds.append(((z > 0) if strict else (z >= 0)).astype(dW.dtype))
        gs = [dW * D for dW, D in zip(dWs, Ds)]
        source = list(dWs) if v_of == "dW" else gs
        flat = np.concatenate([g.ravel() for g in source])
        if v_of == "kept":
            flat = flat[flat != 0]
        if per_layer:
            V = float(np.mean([np.std(g, ddof=ddof) for g in source]))
        else:
            V = float(np.std(flat, ddof=ddof))
        n, mean = flat.size, (flat.mean() if centre else 0.0)
        dV_dgs = [(g - mean) * (g != 0 if v_of == "kept" else 1) / ((n - ddof) * V) for g in source]
        factor = {"dW": dWs, "g": gs}[du_factor]
        dV_du = [du_sign * (dV_dg * f * (tb.h(z) if ste else 0.0)).sum(axis=1)
                 for dV_dg, f, z in zip(dV_dgs, factor, zs)]
        return Ds, gs, V, dV_du
    return fn


ZERO_ROW_HINT = ("a row of zeros must give Ghat = 0 (and D = 0) without computing 0 / 0: divide only "
                 "where the row's L1 norm is nonzero (np.divide(..., where=r != 0)).")

MISTAKES = [
    Mistake(_variant(norm="l2"), "rows were normalised by L2, not L1: Ghat = dW / sum_j |dW_ij|."),
    Mistake(_variant(norm="none"),
            "rows were not normalised: D compares u with |dW| / sum_j |dW_ij|, not with |dW| itself."),
    Mistake(_variant(abs_g=False), "D compares |Ghat| with u: negative gradients were dropped."),
    Mistake(_variant(strict=False),
            "H is strict: an entry with |Ghat| equal to u (e.g. an exact 0 when u = 0) must be dropped (use >, not >=)."),
    Mistake(_variant(v_of="dW"), "V is the std of the masked gradient g = dW * D, not of the dense dW."),
    Mistake(_variant(ddof=0), "V is the unbiased std: divide by n - 1 (np.std(..., ddof=1)), not by n."),
    Mistake(_variant(per_layer=True),
            "V is one std over all layers' masked gradients concatenated, not an average of per-layer stds."),
    Mistake(_variant(du_sign=1.0),
            "dV/du has the wrong sign: dV/du_i = -sum_j dV/dg_ij * dW_ij * h(|Ghat_ij| - u_i)."),
    Mistake(_variant(du_factor="g"),
            "dV/du multiplies by dW, not by g = dW * D: a dropped entry still gets an STE gradient."),
    Mistake(_variant(ste=False),
            "dV/du is zero: use the STE h(|Ghat| - u) in place of H', which is 0 almost everywhere."),
    Mistake(_variant(norm="columns"),
            "Ghat normalises each row (the gradient of one output unit, whose threshold is u_i) by its L1 "
            "norm, sum over axis=1; yours normalised the columns (axis=0)."),
    Mistake(_variant(centre=False),
            "dV/dg_k = (g_k - mean(g)) / ((n - 1) V): the mean of g was not subtracted."),
    Mistake(_variant(v_of="kept"),
            "V is the std of every entry of g = dW * D, the dropped zeros included, not only of the kept entries."),
    Mistake(_variant(h_abs=False),
            "the STE in dV/du is h(|Ghat| - u), at the same z as D; yours used Ghat - u without the |.|."),
]


def _outputs(value):
    Ds, gs, V, dV_du = value
    return {"D": list(Ds), "g": list(gs), "V": V, "dV_du": list(dV_du)}


def check_backward_mask(backward_mask, quiet: bool = False) -> Result:
    """Check ``backward_mask(dWs, us) -> (Ds, gs, V, dV_du)`` against the textbook; print a hint.

    :func:`dfbst_np.textbook.backward_mask` is hidden while ``backward_mask`` runs.
    """
    return run_checks(backward_mask, tb.backward_mask, _cases(), MISTAKES, _outputs, "backward_mask",
                      float_hint=ZERO_ROW_HINT, hide=[(tb, "backward_mask")], quiet=quiet)
