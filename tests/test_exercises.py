"""The exercise checkers never pass a wrong answer: each wrong answer below is
written as a learner would write it (issue 21 lists the first ones) and must
be rejected with the hint that names its mistake; the right answers (the
solutions' code, and differently written ones) must pass. Also: the answer
itself is hidden during a check, complex/object/set outputs and exceptions are
one-line reports, and exercise 4's reference is the library trainer's step."""
import functools

import numpy as np
import pytest

import dfbst_np.exercises as ex
from dfbst_np import textbook as tb
from dfbst_np.exercises import (check_backward_mask, check_forward_mask, check_h, check_layer_grads,
                                check_train_step, reference_step, softmax_cross_entropy)
from dfbst_np.exercises import backward_mask as bm_ex
from dfbst_np.exercises import forward_mask as fm_ex
from dfbst_np.exercises import gradient_rule as gr_ex
from dfbst_np.exercises import training_step as ts_ex

# -- right answers, as the solutions write them -------------------------------------------------


def forward_mask(W, t, method):
    tau = np.abs(t) if method == "dfbst" else t
    M = tb.H(np.abs(W) - tau[:, None])
    if M.mean() <= 0.01:
        t = np.zeros_like(t)
        M = tb.H(np.abs(W) - 0.0)
    return M, t.copy()


def forward_mask_other_style(W, t, method):
    tau = np.where(method == "dfbst", np.abs(t), t)
    M = (np.abs(W) > tau.reshape(-1, 1)).astype(W.dtype)
    if np.count_nonzero(M) <= 0.01 * M.size:
        return (np.abs(W) > 0).astype(W.dtype), np.zeros_like(t)
    return M, np.array(t)


def h(x):
    a = np.abs(x)
    return np.where(a <= 0.4, 2 - 4 * a, np.where(a <= 1, 0.4, 0.0)).astype(x.dtype)


def layer_grads(A, W, t, M, method):
    if method == "dense":
        return A.copy(), None
    tau = np.abs(t) if method == "dfbst" else t
    s = np.where(t >= 0, 1.0, -1.0) if method == "dfbst" else np.ones_like(t)
    z = np.abs(W) - tau[:, None]
    return A * (M + np.abs(W) * h(z)), -s * (A * W * h(z)).sum(axis=1)


def backward_mask(dWs, us):
    zs = []
    for dW, u in zip(dWs, us):
        r = np.abs(dW).sum(axis=1, keepdims=True)
        G = np.divide(dW, r, out=np.zeros_like(dW), where=r != 0)
        zs.append(np.abs(G) - u[:, None])
    Ds = [tb.H(z) for z in zs]
    gs = [dW * D for dW, D in zip(dWs, Ds)]
    flat = np.concatenate([g.ravel() for g in gs])
    n, mean = flat.size, flat.mean()
    V = float(np.sqrt(((flat - mean) ** 2).sum() / (n - 1)))
    dV_du = [-((g - mean) / ((n - 1) * V) * dW * tb.h(z)).sum(axis=1) for g, dW, z in zip(gs, dWs, zs)]
    return Ds, gs, V, dV_du


def train_step(p, X, y, prev_grad_u, epoch, index, hp, *, mistake=None):
    """The right step; ``mistake`` names one wrong line, as a learner would write it."""
    W, b, u = p["W"], p["b"], p["u"]
    M, t = tb.forward_mask(W, p["t"], "dfbst")
    _, dY = softmax_cross_entropy(tb.masked_forward(X, W, M, b), y)
    A, _ = tb.masked_backward(dY, X, W, M)
    db = dY.sum(axis=0)
    dW, dt = tb.layer_grads(A, W, t, M, "dfbst")
    penalty = tb.threshold_penalty(t, hp["alpha"])[1]
    dt = dt - penalty if mistake == "penalty sign" else dt + penalty
    first = {"index 2": 2, "epoch 3": 1}.get(mistake, 1)
    from_epoch = 3 if mistake == "epoch 3" else 2
    du = prev_grad_u if (epoch >= from_epoch and index >= first and prev_grad_u is not None) else None
    if mistake == "clip before D":
        grads = [dW, db, dt] + ([du] if du is not None else [])
        c = min(1.0, hp["clip_norm"] / (np.sqrt(sum((g ** 2).sum() for g in grads)) + 1e-6))
        dW, db, dt, du = c * dW, c * db, c * dt, (None if du is None else c * du)
        _, gs, _, grad_u = tb.backward_mask([dW], [u], scale=hp["beta"])
        c = 1.0
    else:
        _, gs, _, grad_u = tb.backward_mask([dW], [u], scale=hp["beta"])
        grads = [gs[0], db, dt] + ([du] if du is not None else [])
        eps = 0.0 if mistake == "no eps" else 1e-6
        c = min(1.0, hp["clip_norm"] / (np.sqrt(sum((g ** 2).sum() for g in grads)) + eps))
    lr = hp["lr"] * c
    if mistake == "u sign":
        new_u = u.copy() if du is None else u + lr * du
    else:
        new_u = u.copy() if du is None else u - lr * du
    t_lr = 2 * lr if mistake == "t step doubled" else lr
    out = {"W": W - lr * gs[0], "b": b - lr * db, "t": t - t_lr * dt, "u": new_u}
    if mistake == "plus 1j":
        out["W"] = out["W"] + 1j
    return out, grad_u[0]


def _step_with(mistake):
    return functools.partial(train_step, mistake=mistake)


def test_the_right_answers_pass(capsys):
    for check, fn in [(check_forward_mask, forward_mask), (check_forward_mask, forward_mask_other_style),
                      (check_h, h), (check_layer_grads, layer_grads), (check_backward_mask, backward_mask),
                      (check_train_step, train_step)]:
        result = check(fn)
        assert result.passed, (check.__name__, result.message)
        assert all(result.cases.values()) and len(result.cases) >= 3
        assert capsys.readouterr().out.startswith("PASSED")


def test_a_right_answer_passes_after_a_wrong_one_left_the_textbook_intact():
    """The hidden answer is restored after every check, also after the learner's code raised."""
    real = tb.forward_mask
    check_forward_mask(lambda W, t, m: tb.forward_mask(W, t, m))
    check_forward_mask(lambda W, t, m: 1 / 0)
    assert tb.forward_mask is real and ex.reference_step is reference_step
    assert ts_ex.reference_step is reference_step
    assert check_forward_mask(forward_mask).passed


# -- wrong answers: (exercise, function, hint the learner must see) ------------------------------


def _fm(body):
    """A forward_mask with one wrong line, from a template."""
    def fn(W, t, method):
        tau = np.abs(t) if method == "dfbst" else t
        return body(W, t, method, tau)
    return fn


def _fm_reset(W, t, method, tau, fire, recompute=True, new_t=True):
    M = tb.H(np.abs(W) - tau[:, None])
    if fire(M):
        t = np.zeros_like(t) if new_t else t
        if recompute:
            M = tb.H(np.abs(W) - 0.0)
    return M, t.copy()


def fm_calls_the_textbook(W, t, method):
    return tb.forward_mask(W, t, method)


def fm_imported_under_another_name(W, t, method):
    from dfbst_np.textbook import forward_mask as fm
    return fm(W, t, method)


def fm_modifies_t(W, t, method):
    M, t_new = forward_mask(W, t, method)
    t[:] = t_new
    return M, t_new


def fm_t_not_per_row(W, t, method):
    tau = np.abs(t) if method == "dfbst" else t
    return tb.H(np.abs(W) - tau), t.copy()


WRONG_E1 = [
    (fm_calls_the_textbook, "calls dfbst_np.textbook.forward_mask, the answer this exercise asks you to write"),
    (fm_imported_under_another_name, "calls dfbst_np.textbook.forward_mask"),
    (tb.forward_mask, "is dfbst_np.textbook.forward_mask itself"),
    (lambda W, t, m: (forward_mask(W, t, m)[0] + 1j, forward_mask(W, t, m)[1]), "M is complex"),
    (lambda W, t, m: (forward_mask(W, t, m)[0], forward_mask(W, t, m)[1] + 1j), "t_new is complex"),
    (lambda W, t, m: (forward_mask(W, t, m)[0].astype(object), forward_mask(W, t, m)[1]),
     "M is an array of Python objects"),
    (lambda W, t, m: set(np.abs(W).ravel().tolist()), "your function returned a set"),
    (lambda W, t, m: ({0.0, 1.0}, t.copy()), "M is a set"),
    (lambda W, t, m: (np.array(["1"] * W.size).reshape(W.shape), t.copy()), "M has dtype <U1"),
    (lambda W, t, m: forward_mask(W, t, m)[0], "could not read what your function returned"),
    (_fm(lambda W, t, m, tau: _fm_reset(W, t, m, tau, lambda M: M.sum() <= 0.01)),
     "not on M.sum(), the number kept"),
    (_fm(lambda W, t, m, tau: _fm_reset(W, t, m, tau, lambda M: M.mean() < 0.01)),
     "the rule is mean(M) <= 0.01, not < 0.01"),
    (_fm(lambda W, t, m, tau: _fm_reset(W, t, m, tau, lambda M: False)), "the reset did not fire at density <= 1 %"),
    (_fm(lambda W, t, m, tau: _fm_reset(W, t, m, tau, lambda M: M.mean() <= 0.1)),
     "the reset fired at a density above 1 %"),
    (_fm(lambda W, t, m, tau: _fm_reset(W, t, m, tau, lambda M: M.mean() <= 0.05)),
     "the reset fired at a density above 1 %"),
    (_fm(lambda W, t, m, tau: _fm_reset(W, t, m, tau, lambda M: M.mean() <= 0.01, recompute=False)),
     "compute M again with t = 0"),
    (_fm(lambda W, t, m, tau: _fm_reset(W, t, m, tau, lambda M: M.mean() <= 0.01, new_t=False)),
     "return t_new = 0"),
    (lambda W, t, m: _fm_reset(W, t, m, t, lambda M: M.mean() <= 0.01), "DFBST compares |W| with |t|"),
    (lambda W, t, m: _fm_reset(W, t, m, np.abs(t), lambda M: M.mean() <= 0.01), "DST compares |W| with t itself"),
    (_fm(lambda W, t, m, tau: ((W - tau[:, None] > 0).astype(W.dtype), t.copy())
         if (W - tau[:, None] > 0).mean() > 0.01 else (np.ones_like(W) * (W > 0), np.zeros_like(t))),
     "compare |W|, not W"),
    (_fm(lambda W, t, m, tau: ((np.abs(W) >= tau[:, None]).astype(W.dtype), t.copy())
         if (np.abs(W) >= tau[:, None]).mean() > 0.01 else ((np.abs(W) >= 0).astype(W.dtype), np.zeros_like(t))),
     "H is strict (H(0) = 0)"),
    (_fm(lambda W, t, m, tau: (tb.H(np.abs(W) - tau[:, None]), t.copy())
         if tb.H(np.abs(W) - tau[:, None]).mean() > 0.01 else (np.ones_like(W), np.zeros_like(t))),
     "a weight that is exactly 0 stays pruned"),
    (fm_modifies_t, "modified its inputs"),
    (fm_t_not_per_row, "your function raised ValueError: operands could not be broadcast"),
    (lambda W, t, m: (_ for _ in ()).throw(FloatingPointError("overflow encountered in exp")),
     "your function raised FloatingPointError: overflow encountered in exp"),
]


def h_calls_the_textbook(x):
    return tb.h(x)


def lg_calls_the_textbook(A, W, t, M, method):
    return tb.layer_grads(A, W, t, M, method)


def _lg(ste_factor=lambda W: np.abs(W), dt_sign=-1.0, s_rule="s", dense_dt=None, first=lambda A, M: A * M):
    def fn(A, W, t, M, method):
        if method == "dense":
            return A.copy(), dense_dt
        tau = np.abs(t) if method == "dfbst" else t
        s = {"s": np.where(t >= 0, 1.0, -1.0), "one": np.ones_like(t), "np.sign": np.sign(t)}[s_rule]
        s = s if method == "dfbst" else np.ones_like(t)
        z = np.abs(W) - tau[:, None]
        return first(A, M) + A * ste_factor(W) * h(z), dt_sign * s * (A * W * h(z)).sum(axis=1)
    return fn


WRONG_E2_H = [
    (h_calls_the_textbook, "calls dfbst_np.textbook.h"),
    (lambda x: h(x) + 1j, "h(x) is complex"),
    (lambda x: {}["h"], "your function raised KeyError: 'h'"),
    (lambda x: np.where(x <= 0.4, 2 - 4 * x, np.where(x <= 1, 0.4, 0.0)), "h must be symmetric"),
    (lambda x: np.where(np.abs(x) <= 0.4, 2 - 4 * np.abs(x), 0.0), "missing its long tail"),
    (lambda x: np.where(np.abs(x) <= 0.4, 2 - 4 * np.abs(x), np.where(np.abs(x) < 1, 0.4, 0.0)), "h(1) = 0.4"),
    (lambda x: np.where(np.abs(x) <= 0.4, 2 - 4 * np.abs(x), 0.4), "h must be 0 for |x| > 1"),
    (lambda x: np.where(np.abs(x) <= 0.4, 2 - 2 * np.abs(x), np.where(np.abs(x) <= 1, 0.4, 0.0)),
     "the inner part of h is 2 - 4|x|"),
]

WRONG_E2 = [
    (lg_calls_the_textbook, "calls dfbst_np.textbook.layer_grads"),
    (tb.layer_grads, "is dfbst_np.textbook.layer_grads itself"),
    (lambda *a: (layer_grads(*a)[0] + 1j, layer_grads(*a)[1]), "dW is complex"),
    (_lg(ste_factor=np.sign), "A * sign(W) * h(z) lost W's magnitude"),
    (_lg(ste_factor=lambda W: W), "not A * W * h(z)"),
    (_lg(ste_factor=lambda W: 0.0), "dW is missing the STE term"),
    (_lg(s_rule="one"), "dt has the wrong sign for negative thresholds"),
    (_lg(s_rule="np.sign"), "s(0) = 1"),
    (_lg(dt_sign=1.0), "dt has the wrong overall sign"),
    (_lg(dense_dt=np.zeros(5)), 'for "dense" there is no threshold'),
    (_lg(first=lambda A, M: A), "the first term of dW is A * M"),
    (lambda A, W, t, M, method: (_lg()(A, W, t, M, method)[0] * (1 if method == "dense" else 1) +
                                 0 * A, None if method == "dense" else
                                 -(np.where(t >= 0, 1.0, -1.0) if method == "dfbst" else 1.0) *
                                 (A * h(np.abs(W) - (np.abs(t) if method == "dfbst" else t)[:, None])).sum(axis=1)),
     "the factor W is missing"),
    (lambda A, W, t, M, method: (_ for _ in ()).throw(FloatingPointError("invalid value encountered")),
     "your function raised FloatingPointError: invalid value encountered"),
]


def bm_calls_the_textbook(dWs, us):
    return tb.backward_mask(dWs, us)


def _bm(norm_axis=1, safe=True, ddof=1, du_sign=-1.0, centre=True, factor="dW"):
    def fn(dWs, us):
        zs = []
        for dW, u in zip(dWs, us):
            r = np.abs(dW).sum(axis=norm_axis, keepdims=True)
            G = np.divide(dW, r, out=np.zeros_like(dW), where=r != 0) if safe else dW / r
            zs.append(np.abs(G) - u[:, None])
        Ds = [tb.H(z) for z in zs]
        gs = [dW * D for dW, D in zip(dWs, Ds)]
        flat = np.concatenate([g.ravel() for g in gs])
        n, mean = flat.size, (flat.mean() if centre else 0.0)
        V = float(np.std(flat, ddof=ddof))
        dV_du = [du_sign * ((g - mean) / ((n - ddof) * V) * (dW if factor == "dW" else g) * tb.h(z)).sum(axis=1)
                 for g, dW, z in zip(gs, dWs, zs)]
        return Ds, gs, V, dV_du
    return fn


def bm_v_doubled(dWs, us):
    Ds, gs, V, dV_du = backward_mask(dWs, us)
    return Ds, gs, 2 * V, dV_du


WRONG_E3 = [
    (bm_calls_the_textbook, "calls dfbst_np.textbook.backward_mask"),
    (lambda dWs, us: backward_mask(dWs, us)[:2] + (backward_mask(dWs, us)[2] + 1j, backward_mask(dWs, us)[3]),
     "V is complex"),
    (lambda dWs, us: backward_mask(dWs, us)[:3] + ([d.astype(object) for d in backward_mask(dWs, us)[3]],),
     "dV_du[0] is an array of Python objects"),
    (_bm(norm_axis=0), "yours normalised the columns (axis=0)"),
    (_bm(safe=False), "a row of zeros must give Ghat = 0"),
    (_bm(ddof=0), "V is the unbiased std"),
    (_bm(du_sign=1.0), "dV/du has the wrong sign"),
    (_bm(centre=False), "the mean of g was not subtracted"),
    (_bm(factor="g"), "dV/du multiplies by dW, not by g = dW * D"),
    (bm_v_doubled, "V differs"),
    (lambda dWs, us: (_ for _ in ()).throw(FloatingPointError("overflow encountered in square")),
     "your function raised FloatingPointError: overflow encountered in square"),
]

WRONG_E4 = [
    (lambda p, X, y, prev, epoch, index, hp: reference_step(p, X, y, prev, epoch, index, hp),
     "calls dfbst_np.exercises.reference_step"),
    (reference_step, "is dfbst_np.exercises.reference_step itself"),
    (_step_with("index 2"), "not from index 2 on"),
    (_step_with("epoch 3"), "not in epoch 3"),
    (_step_with("penalty sign"), "the penalty's gradient has the wrong sign"),
    (_step_with("clip before D"), "clip after the backward mask"),
    (_step_with("no eps"), "the + 1e-6 is missing"),
    (_step_with("u sign"), "u moved up its gradient"),
    (_step_with("plus 1j"), "W is complex"),
    (_step_with("t step doubled"), "the update of t is the textbook's times 2"),
    (lambda *a: (_ for _ in ()).throw(FloatingPointError("overflow encountered in exp")),
     "your function raised FloatingPointError: overflow encountered in exp"),
    (lambda p, *a: (p.update(W=p["W"] * 0.5), train_step(p, *a))[1], "modified its inputs"),
    (lambda *a: (train_step(*a)[0], {1.0}), "grad_u is a set"),
    (lambda *a: (list(train_step(*a)[0].values()), train_step(*a)[1]), "not a dict with W, b, t, u"),
]


@pytest.mark.parametrize("check, wrong, hint",
                         [(check_forward_mask, w, hint) for w, hint in WRONG_E1]
                         + [(check_h, w, hint) for w, hint in WRONG_E2_H]
                         + [(check_layer_grads, w, hint) for w, hint in WRONG_E2]
                         + [(check_backward_mask, w, hint) for w, hint in WRONG_E3]
                         + [(check_train_step, w, hint) for w, hint in WRONG_E4])
def test_a_wrong_answer_is_rejected_with_the_hint_that_names_it(check, wrong, hint, capsys):
    result = check(wrong)
    assert not result.passed, (check.__name__, hint)
    assert hint in result.message, (hint, result.message)
    out = capsys.readouterr().out
    assert out.startswith("NOT YET") and hint in out          # the learner sees it, printed
    assert "\n" not in out.strip()                             # one line, never a traceback
    assert not all(result.cases.values())


def test_every_listed_mistake_is_told_apart_from_the_textbook():
    """Each module's MISTAKES list: every entry is caught, and by its own hint."""
    for check, mistakes in [(check_forward_mask, fm_ex.MISTAKES), (check_h, gr_ex.H_MISTAKES),
                            (check_layer_grads, gr_ex.GRAD_MISTAKES), (check_backward_mask, bm_ex.MISTAKES),
                            (check_train_step, ts_ex.MISTAKES)]:
        hints = [m.hint for m in mistakes]
        for m in mistakes:
            result = check(m.fn, quiet=True)
            assert not result.passed and m.hint in result.message, (check.__name__, m.hint, result.message)
            assert len({hint for hint in hints if hint in result.message}) == 1


@pytest.mark.parametrize("check", [check_forward_mask, check_h, check_layer_grads, check_backward_mask,
                                   check_train_step])
def test_a_stub_is_not_implemented_yet_and_does_not_raise(check):
    def stub(*args):
        raise NotImplementedError
    result = check(stub)
    assert not result.passed and result.message.startswith("not implemented yet")


def test_a_textbook_call_caught_by_the_learners_own_try_is_still_named():
    def sneaky(W, t, method):
        try:
            return tb.forward_mask(W, t, method)
        except Exception:
            return forward_mask(W, t, method)
    result = check_forward_mask(sneaky)
    assert not result.passed and "calls dfbst_np.textbook.forward_mask" in result.message
    assert not any(result.cases.values())


def test_an_unexplained_difference_lists_every_differing_output_in_the_steps_order():
    """No listed mistake reproduces a doubled V: the message names V and says what agrees."""
    result = check_backward_mask(bm_v_doubled, quiet=True)
    assert "V differs" in result.message and "these agree: D, g, dV_du" in result.message
    assert "W differs" not in check_train_step(_step_with("penalty sign"), quiet=True).message


def test_exercise_4_cases_cover_every_epoch_and_batch_index_that_matters():
    seen = {(c.args[4], c.args[5]) for c in ts_ex._cases()}
    assert {(e, i) for e in (1, 2, 3) for i in (0, 1, 2)} <= seen


def test_reference_step_is_the_trainers_step():
    """The step exercise's answer is the library trainer's step (momentum and weight decay off)."""
    from dfbst_np.nn import Sequential
    from dfbst_np.sparse.masked import MaskedLinear
    from dfbst_np.train.trainer import Trainer

    rng = np.random.default_rng(5)
    layer = MaskedLinear(12, 4, method="dfbst", dtype=np.float64, rng=np.random.default_rng(6))
    layer.params["threshold"][:] = [0.02, -0.03, 0.05, 0.0]
    model = Sequential(layer)
    hp = {"lr": 0.1, "alpha": 0.05, "beta": 0.1, "clip_norm": 0.5}
    trainer = Trainer(model, lr=hp["lr"], momentum=0.0, weight_decay=0.0, alpha=hp["alpha"],
                      beta=hp["beta"], clip_norm=hp["clip_norm"])
    p = {"W": layer.params["weight"].copy(), "b": layer.params["bias"].copy(),
         "t": layer.params["threshold"].copy(), "u": layer.params["dthreshold"].copy()}
    prev = None
    for epoch, index in [(1, 0), (1, 1), (2, 0), (2, 1), (2, 2), (3, 0), (3, 1)]:
        X, y = rng.standard_normal((16, 12)), rng.integers(0, 4, 16)
        trainer.step(X, y, epoch=epoch, index=index)
        p, prev = reference_step(p, X, y, prev, epoch, index, hp)
        for key, name in [("W", "weight"), ("b", "bias"), ("t", "threshold"), ("u", "dthreshold")]:
            np.testing.assert_allclose(p[key], layer.params[name], rtol=1e-10, atol=1e-14,
                                       err_msg=f"{key} after epoch {epoch} index {index}")
        np.testing.assert_allclose(prev, trainer.prev.grad_u[0], rtol=1e-10, atol=1e-16)
    assert np.any(p["u"] != 0)          # u did train, so its one-step-late rule was exercised


# -- the teacher's kit: masters -> student release + otter-grader autograder ----------------------

KIT_WRONG = {   # exercise -> (a wrong answer's source, the cases it must lose, a hint in the failure)
    "e1_forward_mask": ("def forward_mask(W, t, method):\n    return tb.forward_mask(W, t, method)\n",
                        None, "calls dfbst_np.textbook.forward_mask"),
    "e4_training_step": (None, {"epoch 2, index 1", "epoch 3, index 1", "epoch 2, index 1, clipping does not fire",
                                "epoch 2, index 1, reset: t too large"}, "not from index 2 on"),
}


def _defs(nb):
    """The setup cell and the function cells of a notebook, as one source (no test or check cells)."""
    return "\n".join(c.source for c in nb.cells if c.cell_type == "code"
                     and (c.source.startswith(("import numpy", "def ")) and "test_case_" not in c.source))


def test_the_release_script_makes_a_student_version_without_answers_and_an_autograder_that_grades(tmp_path):
    """scripts/release_exercises.py (otter assign on each master): the student notebook has the
    stub and no line of the answer; the autograder's tests (1 point per checker case) give full
    points to the answer and lose the right cases on wrong answers; `otter run` on a student's
    notebook with the answer filled in scores full points end to end."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    nbformat = pytest.importorskip("nbformat")
    from otter.test_files import ExceptionTestFile

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = tmp_path / "release"
    done = subprocess.run([sys.executable, "scripts/release_exercises.py", str(out), "--no-run-tests"],
                          cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    masters = sorted((root / "notebooks/exercises/master").glob("*.ipynb"))
    assert [m.stem for m in masters] == ["e1_forward_mask", "e2_ste_and_gradient_rule", "e3_backward_mask",
                                         "e4_training_step"]
    sys.path.insert(0, str(root / "scripts"))
    try:
        from release_exercises import leaked, solution_lines
    finally:
        sys.path.remove(str(root / "scripts"))

    for master_path in masters:
        stem = master_path.stem
        master = nbformat.read(master_path, as_version=4)
        student = nbformat.read(out / stem / "student" / f"{stem}.ipynb", as_version=4)
        student_code = "\n".join(c.source for c in student.cells if c.cell_type == "code")
        assert len(solution_lines(master)) >= 5 and leaked(master, student) == []
        assert "raise NotImplementedError" in student_code and "BEGIN SOLUTION" not in student_code
        tests = sorted((out / stem / "autograder" / "tests").glob("*.py"))
        assert tests and sorted((out / stem / "autograder").glob("*.zip"))

        def grade(source):
            scope = {}
            exec(source, scope)
            files = [ExceptionTestFile.from_file(str(t)) for t in tests]
            for f in files:
                f.run(scope)
            return files

        for f in grade(_defs(master)):          # the answer: every case, 1 point each
            assert f.possible == len(f.test_cases) >= 3 and f.score == f.possible, f.summary()
        if stem in KIT_WRONG:
            wrong, lost, hint = KIT_WRONG[stem]
            source = _defs(master)
            if wrong is None:                     # exercise 4: the beta term from batch index 2
                source = source.replace("index != 0", "index >= 2")
                assert "index >= 2" in source
            else:
                source = source.split("def ", 1)[0] + wrong
            (f,) = grade(source)
            failed = {r.test_case.success_message.split("'")[1] for r in f.test_case_results if not r.passed}
            assert failed == (lost if lost is not None else
                              {r.test_case.success_message.split("'")[1] for r in f.test_case_results})
            assert all(hint in r.message for r in f.test_case_results if not r.passed)

    # end to end: a student's notebook with the answer filled in, graded by `otter run` with the zip
    stem = "e1_forward_mask"
    student = nbformat.read(out / stem / "student" / f"{stem}.ipynb", as_version=4)
    answer = next(c.source for c in nbformat.read(out / stem / "autograder" / f"{stem}.ipynb", as_version=4).cells
                  if c.cell_type == "code" and c.source.startswith("def forward_mask"))
    for cell in student.cells:
        if cell.cell_type == "code" and cell.source.startswith("def forward_mask"):
            cell.source = answer
    submission = tmp_path / "submission" / f"{stem}.ipynb"
    submission.parent.mkdir()
    nbformat.write(student, submission)
    (zip_path,) = (out / stem / "autograder").glob("*.zip")
    graded = tmp_path / "graded"
    graded.mkdir()
    done = subprocess.run([sys.executable, "-m", "otter", "run", "-a", str(zip_path), "-o", str(graded),
                           "--no-logo", str(submission)], cwd=submission.parent, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    import json
    results = json.loads((graded / "results.json").read_text())
    (scored,) = [t for t in results["tests"] if t["name"] == "forward_mask"]
    assert scored["score"] == scored["max_score"] == len(fm_ex._cases())


def test_the_committed_notebooks_are_what_the_generator_writes():
    """Exercises, solutions and masters come from scripts/make_exercise_notebooks.py: no drift."""
    import sys
    from pathlib import Path

    nbformat = pytest.importorskip("nbformat")
    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "scripts"))
    try:
        import make_exercise_notebooks as gen
    finally:
        sys.path.remove(str(root / "scripts"))
    for ex in gen.EXERCISES:
        for folder, nb in [("", gen.build(ex, False)), ("solutions", gen.build(ex, True)),
                           ("master", gen.build_master(ex))]:
            committed = nbformat.read(root / "notebooks/exercises" / folder / ex["file"], as_version=4)
            assert [(c.cell_type, c.source) for c in committed.cells] == \
                   [(c.cell_type, c.source) for c in nb.cells], (folder, ex["file"])
