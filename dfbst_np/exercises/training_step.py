r"""Exercise 4: the order of one DFBST training step.

The learner writes ``train_step(p, X, y, prev_grad_u, epoch, index, hp)`` for
one masked linear layer (softmax regression, ``p = {"W", "b", "t", "u"}``)
with the textbook's functions as building blocks, plain SGD (no momentum, no
weight decay, so that only the order matters), and returns the new parameters
and this step's :math:`\beta\, \partial V / \partial u` for the next step:

1. forward mask with the reset; 2. forward, cross-entropy, backward
(A, db, then dW and dt by the gradient rule); 3. the penalty's
:math:`-\alpha e^{-t}` added to dt; 4. u's gradient: the *previous* step's
:math:`\beta\, \partial V/\partial u`, only from epoch 2 on and never at
batch index 0 (else u has no gradient); 5. the backward mask on dW, and this
step's :math:`\beta\, \partial V / \partial u`, kept; 6. clipping of the total
norm of every gradient; 7. the SGD update.

:func:`reference_step` is that order in textbook calls; it equals
:class:`dfbst_np.train.trainer.Trainer` with ``momentum=0, weight_decay=0``
(tests/test_exercises.py). :func:`check_train_step` compares the learner's.
"""
from __future__ import annotations

import numpy as np

from .. import textbook as tb
from ._check import Case, Mistake, Result, run_checks

EPS = 1e-6      # PyTorch's clip_grad_norm_: coefficient clip / (norm + 1e-6), capped at 1


def softmax_cross_entropy(Y: np.ndarray, y: np.ndarray):
    r"""Mean cross-entropy of logits Y (N, C) for labels y (N,), and dL/dY.

    .. math:: L = -\frac{1}{N} \sum_n \log \operatorname{softmax}(Y_n)_{y_n}, \qquad
              \frac{\partial L}{\partial Y} = \frac{1}{N}(\operatorname{softmax}(Y) - \operatorname{onehot}(y))
    """
    Z = Y - Y.max(axis=1, keepdims=True)
    logp = Z - np.log(np.exp(Z).sum(axis=1, keepdims=True))
    n = np.arange(len(y))
    dY = np.exp(logp)
    dY[n, y] -= 1
    return float(-logp[n, y].mean()), dY / len(y)


def _step(p, X, y, prev_grad_u, epoch, index, hp, *, u_rule="textbook", mask_dW=True, alpha_term=True,
          clip="all", reset_t=True, bm_after_clip=False):
    W, b, u = p["W"], p["b"], p["u"]
    M, t = tb.forward_mask(W, p["t"], "dfbst")
    if not reset_t:
        t = p["t"].copy()
    _, dY = softmax_cross_entropy(tb.masked_forward(X, W, M, b), y)
    A, _ = tb.masked_backward(dY, X, W, M)
    db = dY.sum(axis=0)
    dW, dt = tb.layer_grads(A, W, t, M, "dfbst")
    if alpha_term:
        dt = dt + tb.threshold_penalty(t, hp["alpha"])[1]
    has_beta = epoch >= 2 and index != 0 and prev_grad_u is not None
    _, gs, _, grad_u = tb.backward_mask([dW], [u], scale=hp["beta"])
    du = {"textbook": prev_grad_u if has_beta else None,
          "now": grad_u[0] if has_beta else None,
          "always": prev_grad_u}[u_rule]
    g = gs[0] if mask_dW else dW
    grads = {"W": g, "b": db, "t": dt, "u": du}
    in_norm = {"all": ("W", "b", "t", "u"), "weights": ("W", "b")}.get(clip, ())
    norm = np.sqrt(sum((grads[k] ** 2).sum() for k in in_norm if grads[k] is not None))
    c = min(1.0, hp["clip_norm"] / (norm + EPS)) if clip != "none" else 1.0
    if bm_after_clip:
        _, _, _, grad_u = tb.backward_mask([c * dW], [u], scale=hp["beta"])
    new = {"W": W - hp["lr"] * c * g, "b": b - hp["lr"] * c * db, "t": t - hp["lr"] * c * dt,
           "u": u.copy() if du is None else u - hp["lr"] * c * du}
    return new, grad_u[0]


def reference_step(p, X, y, prev_grad_u, epoch, index, hp):
    """One DFBST step on one masked linear layer, in the trainer's order; inputs are not modified.

    Parameters
    ----------
    p : dict with W (out, in), b (out,), t (out,), u (out,).
    X : (N, in) inputs; y : (N,) int labels.
    prev_grad_u : (out,) the previous step's beta * dV/du, or None on the first step.
    epoch, index : epoch (from 1) and batch index (from 0) of this step.
    hp : dict with lr, alpha, beta, clip_norm.

    Returns
    -------
    p_new : dict, the parameters after the SGD update.
    grad_u : (out,) this step's beta * dV/du, for the next step.
    """
    return _step(p, X, y, prev_grad_u, epoch, index, hp)


def _cases():
    rng = np.random.default_rng(3)
    out, fan_in, n = 4, 12, 16
    X, y = rng.standard_normal((n, fan_in)), rng.integers(0, out, n)
    p = {"W": 0.3 * rng.standard_normal((out, fan_in)), "b": 0.1 * rng.standard_normal(out),
         "t": np.array([0.1, -0.2, 0.25, 0.05]), "u": np.array([0.0, 0.05, 0.1, 0.02])}
    prev = 0.01 * rng.standard_normal(out)
    hp = {"lr": 0.1, "alpha": 0.05, "beta": 0.1, "clip_norm": 1.0}
    hp_clip = dict(hp, clip_norm=0.05)
    big_t = dict(p, t=np.full(out, 5.0))
    return [
        Case("epoch 1, index 0", (p, X, y, None, 1, 0, hp)),
        Case("epoch 1, index 3 (no beta term yet)", (p, X, y, prev, 1, 3, hp)),
        Case("epoch 2, index 0 (no beta term)", (p, X, y, prev, 2, 0, hp)),
        Case("epoch 2, index 3", (p, X, y, prev, 2, 3, hp)),
        Case("epoch 2, index 3, clipping fires", (p, X, y, prev, 2, 3, hp_clip)),
        Case("reset: t too large", (big_t, X, y, prev, 2, 3, hp)),
    ]


def _v(**kw):
    return lambda *args: _step(*args, **kw)


MISTAKES = [
    Mistake(_v(u_rule="now"),
            "u got this step's beta dV/du: V enters the loss one step late, so u must get prev_grad_u "
            "(the previous step's), and this step's is returned for the next one."),
    Mistake(_v(u_rule="always"),
            "u must get no gradient in epoch 1 or at batch index 0 (the beta term is left out there): "
            "leave u unchanged on those steps."),
    Mistake(_v(mask_dW=False), "the optimiser used the dense dW; it must use g = dW * D."),
    Mistake(_v(alpha_term=False), "dt is missing the penalty's gradient -alpha * exp(-t)."),
    Mistake(_v(clip="weights"),
            "the clipping norm must include every gradient: dW * D, db, dt and (when present) du."),
    Mistake(_v(clip="none"), "the total gradient norm was not clipped to clip_norm (coefficient "
                             "min(1, clip_norm / (norm + 1e-6)))."),
    Mistake(_v(bm_after_clip=True),
            "beta dV/du must come from the unclipped dW: clip last, just before the update."),
    Mistake(_v(reset_t=False),
            "after the reset, use (and update) the reset thresholds t = 0, not the old t."),
]


def _outputs(value):
    new, grad_u = value
    return {"W": new["W"], "b": new["b"], "t": new["t"], "u": new["u"], "grad_u": grad_u}


def check_train_step(train_step) -> Result:
    """Check ``train_step(p, X, y, prev_grad_u, epoch, index, hp) -> (p_new, grad_u)``; print a hint."""
    return run_checks(train_step, reference_step, _cases(), MISTAKES, _outputs, "train_step")
