"""The exercise checkers: each accepts the textbook, rejects typical wrong
answers with the hint that names the mistake, and reports a stub as not
implemented without raising; the step exercise's reference is the trainer's step."""
import numpy as np
import pytest

from dfbst_np import textbook as tb
from dfbst_np.exercises import (check_backward_mask, check_forward_mask, check_h, check_layer_grads,
                                check_train_step, reference_step)
from dfbst_np.exercises import backward_mask as bm_ex
from dfbst_np.exercises import forward_mask as fm_ex
from dfbst_np.exercises import gradient_rule as gr_ex
from dfbst_np.exercises import training_step as ts_ex


def _stub(*args):
    raise NotImplementedError


def _wrong_forward_mask_no_reset(W, t, method):
    M = (np.abs(W) - tb.effective_threshold(t, method)[:, None] > 0).astype(W.dtype)
    return M, t.copy()


def _wrong_forward_mask_strict_reset(W, t, method):
    M = (np.abs(W) - tb.effective_threshold(t, method)[:, None] > 0).astype(W.dtype)
    if M.mean() < 0.01:
        t = np.zeros_like(t)
        M = (np.abs(W) > 0).astype(W.dtype)
    return M, t.copy()


def _wrong_forward_mask_t_not_abs(W, t, method):
    M = (np.abs(W) - t[:, None] > 0).astype(W.dtype)
    if M.mean() <= 0.01:
        t = np.zeros_like(t)
        M = (np.abs(W) > 0).astype(W.dtype)
    return M, t.copy()


def _wrong_forward_mask_ge(W, t, method):
    M = (np.abs(W) - tb.effective_threshold(t, method)[:, None] >= 0).astype(W.dtype)
    if M.mean() <= 0.01:
        t = np.zeros_like(t)
        M = (np.abs(W) >= 0).astype(W.dtype)
    return M, t.copy()


@pytest.mark.parametrize("wrong, hint", [
    (_wrong_forward_mask_no_reset, "the reset did not fire at density <= 1 %"),
    (_wrong_forward_mask_strict_reset, "the reset did not fire at density exactly 1 %"),
    (_wrong_forward_mask_t_not_abs, "DFBST compares |W| with |t|"),
    (_wrong_forward_mask_ge, "H is strict (H(0) = 0)"),
])
def test_forward_mask_checker_names_the_mistake(wrong, hint, capsys):
    result = check_forward_mask(wrong)
    assert not result.passed and hint in result.message
    assert hint in capsys.readouterr().out         # the learner sees it, printed


def test_checkers_accept_the_textbook():
    assert check_forward_mask(tb.forward_mask).passed
    assert check_h(tb.h).passed
    assert check_layer_grads(tb.layer_grads).passed
    assert check_backward_mask(tb.backward_mask).passed
    assert check_train_step(reference_step).passed


@pytest.mark.parametrize("check", [check_forward_mask, check_h, check_layer_grads, check_backward_mask,
                                   check_train_step])
def test_a_stub_is_not_implemented_yet_and_does_not_raise(check):
    result = check(_stub)
    assert not result.passed and result.message.startswith("not implemented yet")


def test_a_function_that_modifies_its_input_is_told_so():
    def in_place(W, t, method):
        M, t_new = tb.forward_mask(W, t, method)
        t[:] = t_new
        return M, t_new
    result = check_forward_mask(in_place)
    assert not result.passed and "modified its inputs" in result.message


def test_h_checker_names_the_mistake():
    def no_abs(x):
        return np.where(x <= 0.4, 2 - 4 * x, np.where(x <= 1, 0.4, 0.0))

    def no_tail(x):
        a = np.abs(x)
        return np.where(a <= 0.4, 2 - 4 * a, 0.0)

    def open_edge(x):
        a = np.abs(x)
        return np.where(a <= 0.4, 2 - 4 * a, np.where(a < 1, 0.4, 0.0))
    assert "h must be symmetric" in check_h(no_abs).message
    assert "missing its long tail" in check_h(no_tail).message
    assert "h(1) = 0.4" in check_h(open_edge).message


def _grads(sign_rule, sign=-1.0, ste=True, w_factor=True):
    def fn(A, W, t, M, method):
        if method == "dense":
            return A.copy(), None
        z = np.abs(W) - tb.effective_threshold(t, method)[:, None]
        s = tb.sign_s(t, method) if sign_rule == "s" else (np.ones_like(t) if sign_rule == "one" else np.sign(t))
        dW = A * M + (A * np.abs(W) * tb.h(z) if ste else 0)
        dt = sign * s * ((A * W if w_factor else A) * tb.h(z)).sum(axis=1)
        return dW, dt
    return fn


@pytest.mark.parametrize("wrong, hint", [
    (_grads("one"), "dt has the wrong sign for negative thresholds"),
    (_grads("np.sign"), "s(0) = 1"),
    (_grads("s", sign=1.0), "dt has the wrong overall sign"),
    (_grads("s", ste=False), "dW is missing the STE term A * |W| * h(z)"),
    (_grads("s", w_factor=False), "the factor W is missing"),
])
def test_layer_grads_checker_names_the_mistake(wrong, hint):
    result = check_layer_grads(wrong)
    assert not result.passed and hint in result.message


def _bm(norm="l1", ddof=1, du_sign=-1.0, safe=True):
    def fn(dWs, us):
        Ds, zs = [], []
        for dW, u in zip(dWs, us):
            r = (np.abs(dW).sum(axis=1, keepdims=True) if norm == "l1"
                 else np.sqrt((dW ** 2).sum(axis=1, keepdims=True)))
            G = np.divide(dW, r, out=np.zeros_like(dW), where=r != 0) if safe else dW / r
            zs.append(np.abs(G) - u[:, None])
            Ds.append((zs[-1] > 0).astype(dW.dtype))
        gs = [dW * D for dW, D in zip(dWs, Ds)]
        flat = np.concatenate([g.ravel() for g in gs])
        V = float(flat.std(ddof=ddof))
        dV_du = [du_sign * ((g - flat.mean()) / ((flat.size - ddof) * V) * dW * tb.h(z)).sum(axis=1)
                 for g, dW, z in zip(gs, dWs, zs)]
        return Ds, gs, V, dV_du
    return fn


@pytest.mark.parametrize("wrong, hint", [
    (_bm(norm="l2"), "rows were normalised by L2, not L1"),
    (_bm(ddof=0), "V is the unbiased std"),
    (_bm(du_sign=1.0), "dV/du has the wrong sign"),
    (_bm(safe=False), "a row of zeros must give Ghat = 0"),
])
def test_backward_mask_checker_names_the_mistake(wrong, hint):
    result = check_backward_mask(wrong)
    assert not result.passed and hint in result.message


@pytest.mark.parametrize("mistake, hint", [
    (dict(u_rule="now"), "V enters the loss one step late"),
    (dict(u_rule="always"), "u must get no gradient in epoch 1 or at batch index 0"),
    (dict(mask_dW=False), "it must use g = dW * D"),
    (dict(alpha_term=False), "penalty's gradient -alpha * exp(-t)"),
    (dict(clip="weights"), "the clipping norm must include every gradient"),
    (dict(reset_t=False), "use (and update) the reset thresholds t = 0"),
])
def test_train_step_checker_names_the_mistake(mistake, hint):
    result = check_train_step(lambda *args: ts_ex._step(*args, **mistake))
    assert not result.passed and hint in result.message


def test_every_listed_mistake_is_told_apart_from_the_textbook():
    """Each module's MISTAKES list: every entry is caught, and by its own hint."""
    for check, mistakes in [(check_forward_mask, fm_ex.MISTAKES), (check_h, gr_ex.H_MISTAKES),
                            (check_layer_grads, gr_ex.GRAD_MISTAKES), (check_backward_mask, bm_ex.MISTAKES),
                            (check_train_step, ts_ex.MISTAKES)]:
        for m in mistakes:
            result = check(m.fn)
            assert not result.passed and m.hint in result.message, (check.__name__, m.hint, result.message)


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
        np.testing.assert_allclose(prev, trainer.method_state.prev.grad_u[0], rtol=1e-10, atol=1e-16)
    assert np.any(p["u"] != 0)          # u did train, so its one-step-late rule was exercised
