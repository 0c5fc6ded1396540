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

import sys

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


def _step(p, X, y, prev_grad_u, epoch, index, hp, *, u_rule="textbook", masked="D", alpha_term="minus",
          clip="all", reset_t=True, bm_after_clip=False, grad_u_out="textbook", u_sign=-1.0, db_rule="sum",
          method="dfbst"):
    """The step in textbook calls; each keyword other than its default is one typical mistake."""
    W, b, u = p["W"], p["b"], p["u"]
    M, t = tb.forward_mask(W, p["t"], method)
    if not reset_t:
        t = p["t"].copy()
    _, dY = softmax_cross_entropy(tb.masked_forward(X, W, M, b), y)
    A, _ = tb.masked_backward(dY, X, W, M)
    db = dY.sum(axis=0) if db_rule == "sum" else dY.mean(axis=0)
    dW, dt = tb.layer_grads(A, W, t, M, method)
    penalty_of = p["t"] if alpha_term == "old_t" else t
    dt = dt + {"minus": 1.0, "plus": -1.0, "old_t": 1.0, "none": 0.0}[alpha_term] * \
        tb.threshold_penalty(penalty_of, hp["alpha"])[1]
    has_beta = {"textbook": epoch >= 2 and index != 0, "now": epoch >= 2 and index != 0,
                "always": True, "epoch_only": epoch >= 2, "index_only": index != 0,
                "epoch3": epoch >= 3 and index != 0, "index2": epoch >= 2 and index >= 2}[u_rule]
    has_beta = has_beta and prev_grad_u is not None
    _, gs, _, grad_u = tb.backward_mask([dW], [u], scale=hp["beta"])
    du = (grad_u[0] if u_rule == "now" else prev_grad_u) if has_beta else None
    g = {"D": gs[0], "dense": dW, "M": dW * M}[masked]
    grads = {"W": g, "b": db, "t": dt, "u": du}
    if clip == "dense_norm" or clip == "before_bm":
        grads = dict(grads, W=dW)
    in_norm = {"weights": ("W", "b"), "no_u": ("W", "b", "t")}.get(clip, ("W", "b", "t", "u"))
    norm = np.sqrt(sum((grads[k] ** 2).sum() for k in in_norm if grads[k] is not None))
    eps = 0.0 if clip == "no_eps" else EPS
    c = {"none": 1.0, "no_cap": hp["clip_norm"] / (norm + eps)}.get(clip, min(1.0, hp["clip_norm"] / (norm + eps)))
    if clip == "separate":
        scale = {k: min(1.0, hp["clip_norm"] / (np.sqrt((v ** 2).sum()) + EPS)) for k, v in grads.items()
                 if v is not None}
    else:
        scale = {k: c for k in grads}
    if clip == "before_bm":
        _, gs, _, grad_u = tb.backward_mask([c * dW], [u], scale=hp["beta"])
        g, scale["W"] = gs[0], 1.0
    if bm_after_clip:
        _, _, _, grad_u = tb.backward_mask([c * dW], [u], scale=hp["beta"])
    lr = hp["lr"]
    new = {"W": W - lr * scale["W"] * g, "b": b - lr * scale["b"] * db, "t": t - lr * scale["t"] * dt,
           "u": u.copy() if du is None else u + u_sign * lr * scale["u"] * du}
    returned = {"textbook": grad_u[0], "prev": prev_grad_u,
                "unscaled": grad_u[0] / hp["beta"]}[grad_u_out]
    return new, returned


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
    hp = {"lr": 0.1, "alpha": 0.05, "beta": 0.1, "clip_norm": 0.5}      # the total norm is about 1.1
    no_clip = dict(hp, clip_norm=5.0)
    big_t = dict(p, t=np.full(out, 5.0))
    # u's gradient depends on (epoch, index): every combination up to 3 tells the rule apart from
    # "from epoch 3", "from index 2", "at index 0 too", "in epoch 1 too".
    cases = [Case(f"epoch {e}, index {i}", (p, X, y, None if (e, i) == (1, 0) else prev, e, i, hp))
             for e in (1, 2, 3) for i in (0, 1, 2)]
    return cases + [
        Case("epoch 2, index 1, clipping does not fire", (p, X, y, prev, 2, 1, no_clip)),
        Case("epoch 2, index 1, reset: t too large", (big_t, X, y, prev, 2, 1, hp)),
    ]


def _v(**kw):
    return lambda *args: _step(*args, **kw)


MISTAKES = [
    Mistake(_v(u_rule="now"),
            "u got this step's beta dV/du: V enters the loss one step late, so u must get prev_grad_u "
            "(the previous step's), and this step's is returned for the next one."),
    Mistake(_v(u_rule="epoch3"),
            "u's gradient starts in epoch 2 (epoch >= 2), not in epoch 3: the first epoch is the only one "
            "without the beta term."),
    Mistake(_v(u_rule="index2"),
            "u gets prev_grad_u at every batch index but 0 (index != 0: index 1 too), not from index 2 on."),
    Mistake(_v(u_rule="epoch_only"),
            "u gets no gradient at batch index 0, in every epoch: prev_grad_u then comes from the previous "
            "epoch's last step (leave u unchanged when index == 0)."),
    Mistake(_v(u_rule="index_only"),
            "u gets no gradient in epoch 1 (the beta term starts in epoch 2): leave u unchanged there."),
    Mistake(_v(u_rule="always"),
            "u must get no gradient in epoch 1 or at batch index 0 (the beta term is left out there): "
            "leave u unchanged on those steps."),
    Mistake(_v(u_sign=1.0), "u moved up its gradient: SGD is u <- u - lr * c * du."),
    Mistake(_v(masked="dense"), "the optimiser used the dense dW; it must use g = dW * D."),
    Mistake(_v(masked="M"),
            "the optimiser's gradient is g = dW * D, the backward mask, not dW * M, the forward mask."),
    Mistake(_v(alpha_term="none"), "dt is missing the penalty's gradient -alpha * exp(-t)."),
    Mistake(_v(alpha_term="plus"),
            "the penalty's gradient has the wrong sign: P = alpha * sum exp(-t) falls as t grows, so "
            "dP/dt = -alpha * exp(-t) (tb.threshold_penalty's second value, added as it is)."),
    Mistake(_v(alpha_term="old_t"),
            "the penalty's gradient is taken at the thresholds after the reset (t = 0), not at the old t."),
    Mistake(_v(reset_t=False),
            "after the reset, use (and update) the reset thresholds t = 0, not the old t."),
    Mistake(_v(method="dst"), 'this step is DFBST: call the textbook with method "dfbst" (tau = |t|), not "dst".'),
    Mistake(_v(db_rule="mean"),
            "db is the sum of dY over the batch (softmax_cross_entropy's dY already carries the 1/N)."),
    Mistake(_v(clip="before_bm"),
            "clip after the backward mask: the clipping norm is over g = dW * D (not the dense dW), and "
            "beta dV/du comes from the unclipped dW."),
    Mistake(_v(bm_after_clip=True),
            "beta dV/du must come from the unclipped dW, and is returned unclipped (the next step clips it "
            "with its own gradients): clip last, just before the update."),
    Mistake(_v(clip="dense_norm"),
            "the clipping norm is over g = dW * D, the gradient the optimiser uses, not the dense dW."),
    Mistake(_v(clip="weights"),
            "the clipping norm must include every gradient: dW * D, db, dt and (when present) du."),
    Mistake(_v(clip="no_u"),
            "the clipping norm includes du on the steps where u has a gradient (g, db, dt and du together)."),
    Mistake(_v(clip="no_eps"),
            "the clip coefficient is min(1, clip_norm / (norm + 1e-6)), as PyTorch's clip_grad_norm_: "
            "the + 1e-6 is missing."),
    Mistake(_v(clip="no_cap"),
            "the clip coefficient is capped at 1, c = min(1, clip_norm / (norm + 1e-6)): yours scaled small "
            "gradients up."),
    Mistake(_v(clip="separate"),
            "clip the total norm of all gradients together (one coefficient c), not each gradient separately."),
    Mistake(_v(clip="none"), "the total gradient norm was not clipped to clip_norm (coefficient "
                             "min(1, clip_norm / (norm + 1e-6)))."),
    Mistake(_v(grad_u_out="unscaled"),
            "return beta * dV/du (backward_mask(..., scale=hp['beta'])), not dV/du."),
    Mistake(_v(grad_u_out="prev"),
            "return this step's beta dV/du (from backward_mask on this step's dW), not prev_grad_u."),
]


def _outputs(value):
    new, grad_u = value
    if not isinstance(new, dict):
        raise TypeError(f"the new parameters are a {type(new).__name__}, not a dict with W, b, t, u")
    # The order of the step: u's gradient (prev_grad_u) and this step's beta dV/du come from the
    # unclipped gradients; every update comes after clipping, so W is compared last.
    return {"u": new["u"], "grad_u": grad_u, "t": new["t"], "b": new["b"], "W": new["W"]}


def _diagnose(case, got, want):
    """Which update points elsewhere than the textbook's, and which is only rescaled (by clipping)."""
    p = case.args[0]
    scales, wrong = {}, []
    for k in ("u", "t", "b", "W"):
        dg, dw = p[k] - np.asarray(got[k], dtype=float), p[k] - want[k]
        if not dw.any():
            if np.abs(dg).max() > ATOL_UPDATE:
                wrong.append(f"{k} moved, but must stay as it is on this step")
            continue
        s = float((dg * dw).sum() / (dw * dw).sum())
        if np.abs(dg - s * dw).max() <= 1e-9 * np.abs(dw).max():
            scales[k] = s
        else:
            wrong.append(f"the update of {k} points elsewhere than the textbook's (its gradient differs)")
    if not wrong and scales and np.ptp(list(scales.values())) <= 1e-9 * max(map(abs, scales.values())):
        s = next(iter(scales.values()))
        if abs(s - 1) > 1e-12:
            return (f"every update is the textbook's times {s:.9g}: the gradients are right, the clipping "
                    f"coefficient is not (c = min(1, clip_norm / (norm + 1e-6)), the norm over g, db, dt "
                    f"and du together)")
    if not wrong and len(scales) > 1:
        values = sorted(scales.values())
        common = values[len(values) // 2]
        odd = [k for k, v in scales.items() if abs(v - common) > 1e-9 * abs(common)]
        if odd:
            return "; ".join(f"the update of {k} is the textbook's times {scales[k]:.6g} while the others' are "
                             f"times {common:.6g}: {k}'s gradient or step size is scaled wrongly" for k in odd)
    if wrong:
        rescaled = [k for k in scales if abs(scales[k] - 1) > 1e-12]
        extra = (f"; {', '.join(rescaled)} only rescaled, as clipping does when another gradient changes the "
                 f"norm" if rescaled else "")
        return "; ".join(wrong) + extra
    return None


ATOL_UPDATE = 1e-15


def check_train_step(train_step, quiet: bool = False) -> Result:
    """Check ``train_step(p, X, y, prev_grad_u, epoch, index, hp) -> (p_new, grad_u)``; print a hint.

    :func:`reference_step` (the answer) is hidden while ``train_step`` runs.
    """
    import dfbst_np.exercises as package
    return run_checks(train_step, reference_step, _cases(), MISTAKES, _outputs, "train_step",
                      hide=[(package, "reference_step"), (sys.modules[__name__], "reference_step")],
                      diagnose=_diagnose, quiet=quiet)
