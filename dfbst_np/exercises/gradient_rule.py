r"""Exercise 2: the straight-through estimator h and the gradient rule for dW and dt.

The learner writes ``h(x)`` (DST's long-tailed estimator, used in place of H')
and ``layer_grads(A, W, t, M, method) -> (dW, dt)``:

.. math::
    z = |W| - \tau, \qquad
    \frac{\partial L}{\partial W} = A \odot (M + |W| \odot h(z)), \qquad
    \frac{\partial L}{\partial t_i} = -s(t_i) \sum_j A_{ij} W_{ij}\, h(z_{ij})

:func:`check_h` and :func:`check_layer_grads` compare them with
:func:`dfbst_np.textbook.h` and :func:`dfbst_np.textbook.layer_grads`.
"""
from __future__ import annotations

import numpy as np

from .. import methods
from .. import textbook as tb
from ._check import Case, Mistake, Result, run_checks

# -- h ------------------------------------------------------------------------


def _h_cases():
    edges = np.array([0.0, 0.2, 0.4, 0.41, 0.7, 1.0, 1.01, 1.5, 3.0])
    return [Case("x >= 0, including the corners 0.4 and 1", (edges,)),
            Case("x < 0", (-edges,)),
            Case("a (3, 4) array", (np.linspace(-1.2, 1.2, 12).reshape(3, 4),))]


def _h_variant(symmetric=True, tail=0.4, edge_included=True, cutoff=True, slope=4.0):
    def fn(x):
        a = np.abs(x) if symmetric else x
        inner = a <= 1 if edge_included else a < 1
        out = np.where(a <= 0.4, 2 - slope * a, np.where(inner, tail, 0.4 if not cutoff else 0.0))
        return out.astype(np.asarray(x).dtype)
    return fn


H_MISTAKES = [
    Mistake(_h_variant(symmetric=False), "h must be symmetric in x: use |x| (h(-x) = h(x))."),
    Mistake(_h_variant(tail=0.0), "h is missing its long tail: h(x) = 0.4 for 0.4 < |x| <= 1."),
    Mistake(_h_variant(edge_included=False), "the tail includes |x| = 1: h(1) = 0.4 (use <= 1, not < 1)."),
    Mistake(_h_variant(cutoff=False), "h must be 0 for |x| > 1; yours keeps 0.4 there."),
    Mistake(_h_variant(slope=2.0), "the inner part of h is 2 - 4|x| (it falls from 2 at x = 0 to 0.4 at |x| = 0.4)."),
]


def check_h(h, quiet: bool = False) -> Result:
    """Check ``h(x)`` against :func:`dfbst_np.textbook.h` (hidden while ``h`` runs); print a hint."""
    return run_checks(h, tb.h, _h_cases(), H_MISTAKES, lambda v: {"h(x)": v}, "h",
                      hide=[(tb, "h")], quiet=quiet)


# -- layer_grads ----------------------------------------------------------------


def _grad_cases():
    rng = np.random.default_rng(1)
    W = 0.5 * rng.standard_normal((5, 12))
    A = rng.standard_normal((5, 12))

    def case(name, t, method):
        M, t_used = tb.forward_mask(W, t, method)
        return Case(name, (A, W, t_used, M, method))
    return [
        case("t > 0 (dfbst)", np.full(5, 0.3), "dfbst"),
        case("t < 0 (dfbst)", np.array([-0.3, -0.1, -0.5, -0.2, -0.05]), "dfbst"),
        case("t = 0, the initial thresholds (dfbst)", np.zeros(5), "dfbst"),
        case("t < 0 (dst)", np.array([-0.3, 0.1, -0.5, 0.2, -0.05]), "dst"),
        Case("dense: no mask", (A, W, None, np.ones_like(W), "dense")),
    ]


def _grad_variant(ste=True, abs_w=True, tau_abs=True, s_rule="textbook", sign=-1.0, w_in_dt=True,
                  ste_where="all", dense_dt=None, z_abs=True, dt_axis=1, no_mask=False):
    def fn(A, W, t, M, method):
        rule = methods.get(method)            # a wrong variant still reads the method's rule right
        if not rule.masked:
            return A.copy(), (None if dense_dt is None else np.zeros(W.shape[0]))
        tau = np.abs(t) if (rule.abs_threshold and tau_abs) else t
        z = (np.abs(W) if z_abs else W) - tau[:, None]
        s = {"textbook": tb.sign_s(t, method), "one": np.ones_like(t), "np.sign": np.sign(t)}[s_rule]
        if not rule.abs_threshold:            # DST: s = 1 whatever the variant
            s = np.ones_like(t)
        w_factor = {True: np.abs(W), False: W, "sign": np.sign(W)}[abs_w]
        where = {"all": 1.0, "kept": M, "pruned": 1 - M}[ste_where]
        dW = (A if no_mask else A * M) + ((A * w_factor * tb.h(z) * where) if ste else 0.0)
        dt = sign * s * ((A * W if w_in_dt else A) * tb.h(z)).sum(axis=dt_axis)
        return dW, dt
    return fn


GRAD_MISTAKES = [
    Mistake(_grad_variant(s_rule="one"),
            "dt has the wrong sign for negative thresholds: d|t|/dt = -1 when t < 0, so dt = -s(t) * sum_j A W h(z)."),
    Mistake(_grad_variant(s_rule="np.sign"),
            "s(0) = 1: np.sign(0) = 0 gave the thresholds no gradient at t = 0 (use s = 1 for t >= 0, else -1)."),
    Mistake(_grad_variant(sign=1.0),
            "dt has the wrong overall sign: raising t prunes weights, so dt = -s(t) * sum_j A W h(z)."),
    Mistake(_grad_variant(sign=1.0, s_rule="one"),
            "dt has the wrong overall sign: raising t prunes weights, so dt = -s(t) * sum_j A W h(z)."),
    Mistake(_grad_variant(ste=False),
            "dW is missing the STE term A * |W| * h(z): with only A * M, pruned weights never come back."),
    Mistake(_grad_variant(abs_w=False),
            "the STE term of dW is A * |W| * h(z) (W's own factor times d|W|/dW = sign(W)), not A * W * h(z)."),
    Mistake(_grad_variant(tau_abs=False),
            "for DFBST, h is evaluated at z = |W| - |t|, not |W| - t."),
    Mistake(_grad_variant(w_in_dt=False),
            "dt sums A * W * h(z) over the row: the factor W is missing."),
    Mistake(_grad_variant(abs_w="sign"),
            "the STE term of dW is A * |W| * h(z): the gradient reaching M is G = A * W, and "
            "d|W|/dW = sign(W) turns W * sign(W) into |W|; A * sign(W) * h(z) lost W's magnitude."),
    Mistake(_grad_variant(ste_where="kept"),
            "the STE term A * |W| * h(z) applies to every weight, pruned ones too (that is how they "
            "come back), not only where M = 1."),
    Mistake(_grad_variant(ste_where="pruned"),
            "the STE term A * |W| * h(z) applies to every weight, kept ones too, not only where M = 0."),
    Mistake(_grad_variant(dense_dt=True), 'for "dense" there is no threshold: return dt = None, not zeros.'),
    Mistake(_grad_variant(z_abs=False), "h is evaluated at z = |W| - tau (the magnitude of W), not W - tau."),
    Mistake(_grad_variant(no_mask=True),
            "the first term of dW is A * M: a pruned weight gets only the STE term, not A itself."),
]


def _grad_outputs(value):
    dW, dt = value
    return {"dW": dW, "dt": dt}


def check_layer_grads(layer_grads, quiet: bool = False) -> Result:
    """Check ``layer_grads(A, W, t, M, method) -> (dW, dt)`` against the textbook; print a hint.

    :func:`dfbst_np.textbook.layer_grads` is hidden while ``layer_grads`` runs.
    """
    return run_checks(layer_grads, tb.layer_grads, _grad_cases(), GRAD_MISTAKES, _grad_outputs,
                      "layer_grads", hide=[(tb, "layer_grads")], quiet=quiet)
