"""clip_grad_norm against torch.nn.utils.clip_grad_norm_."""
import numpy as np
import pytest

from dfbst_np.nn.clip import clip_grad_norm
from dfbst_np.nn.optim import SGD
from tests.helpers import rel_err

import torch

SHAPES = {"conv.weight": (3, 2, 3, 3), "conv.threshold": (3,), "fc.weight": (5, 7),
          "fc.bias": (5,), "fc.dthreshold": (5,)}
TOL = 1e-12


def grad_schedule(steps=20, seed=3):
    """Gradients whose total norm is sometimes above, sometimes below max_norm."""
    rng = np.random.default_rng(seed)
    out = []
    for s in range(steps):
        scale = 10.0 ** rng.uniform(-2.5, 1)
        grads = {k: scale * rng.standard_normal(shape) for k, shape in SHAPES.items()}
        if s % 4 == 0:
            del grads["fc.dthreshold"]
        if s % 5 == 1:
            del grads["conv.threshold"]
        out.append(grads)
    return out


def torch_clip(grads, max_norm):
    tparams = {k: torch.zeros(shape, dtype=torch.float64, requires_grad=True)
               for k, shape in SHAPES.items()}
    for k, p in tparams.items():
        p.grad = torch.from_numpy(grads[k].copy()) if k in grads else None
    total = torch.nn.utils.clip_grad_norm_(list(tparams.values()), max_norm)
    return float(total), {k: p.grad.numpy() for k, p in tparams.items() if p.grad is not None}


@pytest.mark.parametrize("max_norm", [1.0, 0.25, 5.0])
def test_matches_torch_over_20_steps(max_norm):
    clipped_steps = 0
    for grads in grad_schedule():
        ref_total, ref = torch_clip(grads, max_norm)
        ours = {k: g.copy() for k, g in grads.items()}
        total = clip_grad_norm(ours, max_norm)
        assert isinstance(total, float)
        assert rel_err(total, ref_total) <= TOL
        assert set(ours) == set(ref)
        for k in ours:
            assert rel_err(ours[k], ref[k]) <= TOL, k
        if total + 1e-6 > max_norm:
            clipped_steps += 1
            joint = np.sqrt(sum(np.sum(g * g) for g in ours.values()))
            assert joint <= max_norm * (1 + 1e-12)
        else:
            # Coefficient clamped to 1: the gradients are not changed at all.
            for k in ours:
                assert np.array_equal(ours[k], grads[k])
    assert 0 < clipped_steps < 20       # both regimes were exercised


def test_scales_in_place():
    grads = {"a": np.full(4, 3.0), "b": np.full((2, 2), 4.0)}
    arrays = dict(grads)
    total = clip_grad_norm(grads, 1.0)
    assert total == pytest.approx(10.0)
    assert grads["a"] is arrays["a"] and grads["b"] is arrays["b"]
    assert np.allclose(grads["a"], 3.0 / (10.0 + 1e-6))


def test_clip_then_sgd_matches_torch():
    """The reference trainer's order: clip to 1.0, then SGD with momentum and decay."""
    rng = np.random.default_rng(0)
    params = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    tparams = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    opt = SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)
    topt = torch.optim.SGD(list(tparams.values()), lr=0.1, momentum=0.9, weight_decay=1e-4)
    for grads in grad_schedule():
        grads = {k: g.copy() for k, g in grads.items()}
        for k, p in tparams.items():
            p.grad = torch.from_numpy(grads[k].copy()) if k in grads else None
        clip_grad_norm(grads, 1.0)
        opt.step(grads)
        torch.nn.utils.clip_grad_norm_(list(tparams.values()), 1.0)
        topt.step()
    for k in SHAPES:
        assert rel_err(params[k], tparams[k].detach().numpy()) <= TOL


def test_float32_keeps_dtype_and_agrees_with_torch():
    rng = np.random.default_rng(5)
    grads = {k: (10 * rng.standard_normal(s)).astype(np.float32) for k, s in SHAPES.items()}
    tgrads = [torch.from_numpy(g.copy()) for g in grads.values()]
    tparams = [torch.zeros_like(g, requires_grad=True) for g in tgrads]
    for p, g in zip(tparams, tgrads):
        p.grad = g
    ref_total = float(torch.nn.utils.clip_grad_norm_(tparams, 1.0))
    total = clip_grad_norm(grads, 1.0)
    assert rel_err(total, ref_total) <= 1e-6
    for g, p in zip(grads.values(), tparams):
        assert g.dtype == np.float32
        assert rel_err(g, p.grad.numpy()) <= 1e-6


def test_empty_dict_gives_zero():
    assert clip_grad_norm({}, 1.0) == 0.0


def test_errors_are_named():
    with pytest.raises(FloatingPointError, match="'fc.bias' contains NaN"):
        clip_grad_norm({"fc.weight": np.ones(3), "fc.bias": np.array([1.0, np.nan])}, 1.0)
    with pytest.raises(FloatingPointError, match="'fc.bias' contains inf"):
        clip_grad_norm({"fc.weight": np.ones(3), "fc.bias": np.array([1.0, np.inf])}, 1.0)
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="max_norm"):
            clip_grad_norm({"a": np.ones(2)}, bad)
    with pytest.raises(TypeError, match="'a'"):
        clip_grad_norm({"a": [1.0, 2.0]}, 1.0)
    with pytest.raises(TypeError, match="dict"):
        clip_grad_norm([np.ones(2)], 1.0)
