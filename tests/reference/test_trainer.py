"""The reference training step: when u gets a gradient, V, clipping, schedule."""
import math

import numpy as np
import pytest

import torch

from dfbst_np.reference import ReferenceTrainer, build, evaluate  # noqa: E402
from dfbst_np.reference.layers import masked_layers  # noqa: E402

F64 = torch.float64


def batch(seed, n=8, num_classes=10):
    g = np.random.default_rng(seed)
    return g.random((n, 1, 28, 28)), g.integers(0, num_classes, n)


def dthresholds(model):
    return [m.dthreshold for _, m in masked_layers(model)]


@pytest.fixture
def lenet():
    torch.manual_seed(7)
    return build("lenet300_100")


def test_u_untouched_in_epoch_1_and_at_index_0(lenet):
    tr = ReferenceTrainer(lenet, clip_norm=None)
    schedule = [(1, 0), (1, 1), (1, 2)]
    for k, (epoch, index) in enumerate(schedule):
        stats = tr.step(*batch(k), epoch=epoch, index=index)
        assert stats["beta_term"] == 0.0
        for u in dthresholds(lenet):
            assert u.grad is None
            assert "momentum_buffer" not in tr.optimizer.state.get(u, {})
            assert torch.all(u == 0)
    tr.end_epoch()
    tr.step(*batch(5), epoch=2, index=0)
    for u in dthresholds(lenet):
        assert u.grad is None and torch.all(u == 0)
    # thresholds t and weights did move
    assert lenet.fc1.threshold.grad is not None
    assert "momentum_buffer" in tr.optimizer.state[lenet.fc1.threshold]


@pytest.mark.parametrize("float32_masks", [True, False])
def test_u_gets_beta_dV_du_at_epoch_2_index_1(float32_masks):
    torch.manual_seed(7)
    lenet = build("lenet300_100", float32_masks=float32_masks)
    tr = ReferenceTrainer(lenet, clip_norm=None)
    tr.step(*batch(0), epoch=1, index=0)
    tr.end_epoch()
    tr.step(*batch(1), epoch=2, index=0)
    us = dthresholds(lenet)
    V_prev = tr.V_prev
    expected = torch.autograd.grad(V_prev, us, retain_graph=True)
    stats = tr.step(*batch(2), epoch=2, index=1)
    assert stats["beta_term"] == pytest.approx(0.1 * float(V_prev.detach()), rel=1e-15)
    for u, e in zip(us, expected):
        assert u.grad is not None and torch.any(u.grad != 0)
        # float32 masks round beta * dV/dg * dW to float32 (SPEC): ~1e-8 relative
        rel = float((u.grad - 0.1 * e).abs().max() / u.grad.abs().max())
        assert rel < (1e-6 if float32_masks else 1e-13), rel
        assert "momentum_buffer" in tr.optimizer.state[u]
        assert torch.any(u != 0)


def test_V_is_std_of_masked_weight_grads_and_stats(lenet):
    tr = ReferenceTrainer(lenet, clip_norm=None)
    stats = tr.step(*batch(0), epoch=1, index=0)
    g = torch.cat([m.weight.grad.reshape(-1) for _, m in masked_layers(lenet)])
    assert stats["V"] == pytest.approx(float(torch.std(g)), rel=1e-14)
    for _, m in masked_layers(lenet):
        assert torch.equal(m.weight.grad, m.weight.grad * m.dmask)
    # t = 0 at the start: alpha * (300 + 100 + 10) * exp(0)
    assert stats["alpha_term"] == pytest.approx(5e-6 * 410, rel=1e-14)
    assert stats["loss"] == pytest.approx(stats["ce"] + stats["alpha_term"], rel=1e-14)
    assert set(stats) == {"loss", "ce", "alpha_term", "beta_term", "V", "grad_norm"}
    assert all(isinstance(v, float) for v in stats.values())


def test_clip_bound_respected(lenet):
    tr = ReferenceTrainer(lenet, clip_norm=1e-3)
    stats = tr.step(*batch(0), epoch=1, index=0)
    norm = math.sqrt(sum(float((p.grad ** 2).sum()) for p in lenet.parameters() if p.grad is not None))
    assert stats["grad_norm"] > 1e-3
    assert norm <= 1e-3 * (1 + 1e-12)
    assert norm == pytest.approx(stats["grad_norm"] * 1e-3 / (stats["grad_norm"] + 1e-6), rel=1e-12)


@pytest.mark.filterwarnings("ignore:Detected call of")
def test_lr_schedule():
    model = build("lenet300_100")
    tr = ReferenceTrainer(model, lr=0.1, milestones=(1, 3), gamma=0.1)
    lrs = [tr.lr]
    for _ in range(4):
        tr.end_epoch()
        lrs.append(tr.lr)
    np.testing.assert_allclose(lrs, [0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-12)


def test_dst_and_dense_methods():
    torch.manual_seed(0)
    model = build("lenet300_100", method="dst")
    tr = ReferenceTrainer(model, clip_norm=None)
    tr.step(*batch(0), epoch=1, index=0)
    tr.end_epoch()
    s = tr.step(*batch(1), epoch=2, index=1)
    assert math.isnan(s["V"]) and s["beta_term"] == 0.0 and s["alpha_term"] > 0
    assert model.fc1.dmask is None
    dense = build("lenet300_100", method="dense")
    s = ReferenceTrainer(dense).step(*batch(0), epoch=1, index=0)
    assert s["alpha_term"] == 0.0 and s["loss"] == s["ce"]


def test_float32_masks_agree_over_steps_to_about_1e_8():
    finals = {}
    for f32 in (True, False):
        torch.manual_seed(7)
        model = build("lenet300_100", float32_masks=f32)
        tr = ReferenceTrainer(model)
        for k, (epoch, index) in enumerate([(1, 0), (1, 1), (2, 0), (2, 1), (2, 2)]):
            if k == 2:
                tr.end_epoch()
            tr.step(*batch(k), epoch=epoch, index=index)
        finals[f32] = {k: v.clone() for k, v in model.state_dict().items()}
    worst = max(float((finals[True][k] - v).abs().max() / v.abs().max().clamp_min(1e-300))
                for k, v in finals[False].items())
    assert 0 < worst < 1e-6


def test_inputs_are_not_silently_cast(lenet):
    x, y = batch(0)
    with pytest.raises(TypeError, match="dtype"):
        ReferenceTrainer(lenet).step(x.astype(np.float32), y, epoch=1, index=0)
    with pytest.raises(TypeError, match="labels"):
        ReferenceTrainer(lenet).step(x, y.astype(float), epoch=1, index=0)


def test_evaluate(lenet):
    x, y = batch(0, n=30)
    r = evaluate(lenet, x, y, batch_size=7)
    assert 0.0 <= r["accuracy"] <= 1.0 and r["loss"] > 0
    assert lenet.training
