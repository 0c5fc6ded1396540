"""BinaryStep, the forward mask M, the reset rule and the backward mask D of
the PyTorch reference, checked against SPEC's equations (:mod:`dfbst_np.textbook` where it has them)."""
import numpy as np
import pytest

import torch
import torch.nn.functional as F  # noqa: E402

from dfbst_np import textbook as tb
from dfbst_np.reference.layers import (  # noqa: E402
    BinaryStep, MaskedConv2d, MaskedLinear, binary_step, long_tailed_estimator)

F64 = torch.float64


POINTS = [-1.5, -1.0, -0.7, -0.4, -0.2, -1e-12, 0.0, 1e-12, 0.2, 0.4, 0.40001, 0.7, 1.0, 1.00001, 1.5]


def test_h_at_boundaries():
    x = torch.tensor(POINTS, dtype=F64)
    got = long_tailed_estimator(x).numpy()
    np.testing.assert_allclose(got, tb.h(np.array(POINTS)), rtol=0, atol=1e-15)
    # the three boundaries: |x| = 0 -> 2, |x| = 0.4 -> 0.4 (both branches), |x| = 1 -> 0.4
    assert got[POINTS.index(0.0)] == 2.0
    assert got[POINTS.index(1.0)] == 0.4 and got[POINTS.index(-1.0)] == 0.4
    assert abs(got[POINTS.index(0.4)] - 0.4) < 1e-15
    assert got[POINTS.index(1.00001)] == 0.0


@pytest.mark.parametrize("float32_output", [True, False])
def test_binary_step_forward_backward(float32_output):
    x = torch.tensor(POINTS, dtype=F64, requires_grad=True)
    y = binary_step(x, float32_output)
    assert y.dtype == (torch.float32 if float32_output else F64)
    np.testing.assert_array_equal(y.detach().numpy(), (np.array(POINTS) > 0).astype(float))
    assert y.detach().numpy()[POINTS.index(0.0)] == 0.0  # H(0) = 0
    w = torch.linspace(-2, 3, len(POINTS), dtype=F64)  # non-unit upstream gradient
    (y * w.to(y.dtype)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), w.numpy() * tb.h(np.array(POINTS)),
                               rtol=1e-6 if float32_output else 1e-15, atol=0)
    assert BinaryStep.apply is not None


def _big_linear(method, float32_masks, seed=0):
    torch.manual_seed(seed)
    layer = MaskedLinear(12, 7, method=method, float32_masks=float32_masks).to(F64)
    with torch.no_grad():
        # weights and thresholds large enough to visit every branch of h
        layer.weight.copy_(torch.randn(7, 12, dtype=F64) * 0.8)
        layer.threshold.copy_(torch.randn(7, dtype=F64) * 0.3)
        layer.threshold[0] = 0.0  # s(0) = +1
    return layer


def _literal_grads(W, t, A, method):
    """dW and dt (loss part only) from SPEC's equations, in float64 NumPy."""
    rows = W.reshape(W.shape[0], -1)
    A = A.reshape(rows.shape)
    tc = (np.abs(t) if method == "dfbst" else t)[:, None]
    M = (np.abs(rows) - tc > 0).astype(float)
    hh = tb.h(np.abs(rows) - tc)
    dW = A * (M + np.abs(rows) * hh)
    s = np.where(t >= 0, 1.0, -1.0) if method == "dfbst" else 1.0
    dt = -s * np.sum(A * rows * hh, axis=1)
    return M.reshape(W.shape), dW.reshape(W.shape), dt


@pytest.mark.parametrize("method", ["dfbst", "dst"])
def test_linear_autograd_matches_spec_equations(method):
    layer = _big_linear(method, float32_masks=False)
    x = torch.randn(5, 12, dtype=F64)
    R = torch.randn(5, 7, dtype=F64)
    (layer(x) * R).sum().backward()
    W, t = layer.weight.detach().numpy(), layer.threshold.detach().numpy()
    A = R.numpy().T @ x.numpy()  # dL/dW_hat
    M, dW, dt = _literal_grads(W, t, A, method)
    assert 0.05 < M.mean() < 0.99  # a real mix, and no reset
    gap = np.abs(np.abs(W) - (np.abs(t) if method == "dfbst" else t)[:, None])
    assert (gap <= 0.4).any() and ((gap > 0.4) & (gap <= 1)).any() and (gap > 1).any()
    np.testing.assert_array_equal(layer.mask.numpy(), M)
    np.testing.assert_allclose(layer.weight.grad.numpy(), dW, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(layer.threshold.grad.numpy(), dt, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(layer.bias.grad.numpy(), R.sum(0).numpy(), rtol=1e-14)
    assert layer.dthreshold is None or layer.dthreshold.grad is None


@pytest.mark.parametrize("method", ["dfbst", "dst"])
def test_conv_autograd_matches_spec_equations(method):
    torch.manual_seed(1)
    conv = MaskedConv2d(3, 4, 3, stride=2, padding=1, bias=False, method=method,
                        float32_masks=False).to(F64)
    with torch.no_grad():
        conv.weight.mul_(3.0)
        conv.threshold.copy_(torch.tensor([0.0, -0.2, 0.15, 0.3], dtype=F64))
    x = torch.randn(2, 3, 7, 7, dtype=F64)
    y = conv(x)
    R = torch.randn_like(y)
    (y * R).sum().backward()
    W_hat = (conv.weight * conv.mask).detach().requires_grad_(True)
    (F.conv2d(x, W_hat, stride=2, padding=1) * R).sum().backward()
    W, t = conv.weight.detach().numpy(), conv.threshold.detach().numpy()
    M, dW, dt = _literal_grads(W, t, W_hat.grad.numpy(), method)
    assert 0.05 < M.mean() < 0.95
    np.testing.assert_array_equal(conv.mask.numpy(), M)
    np.testing.assert_allclose(conv.weight.grad.numpy(), dW, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(conv.threshold.grad.numpy(), dt, rtol=1e-13, atol=1e-13)


def test_float32_masks_change_gradients_only_at_float32_rounding():
    grads = {}
    for f32 in (True, False):
        layer = _big_linear("dfbst", float32_masks=f32, seed=3)
        torch.manual_seed(9)
        x = torch.randn(6, 12, dtype=F64)
        R = torch.randn(6, 7, dtype=F64)
        (layer(x) * R).sum().backward()
        assert layer.mask.dtype == (torch.float32 if f32 else F64)
        grads[f32] = (layer.weight.grad.numpy().copy(), layer.threshold.grad.numpy().copy())
    for a, b in zip(grads[True], grads[False]):
        rel = np.abs(a - b).max() / np.abs(b).max()
        assert 0 < rel < 1e-6, rel


@pytest.mark.parametrize("float32_masks", [True, False])
@pytest.mark.parametrize("method", ["dfbst", "dst"])
def test_reset_rule_fires_at_one_percent(method, float32_masks):
    layer = MaskedLinear(10, 10, method=method, float32_masks=float32_masks).to(F64)
    x = torch.randn(3, 10, dtype=F64)
    for n_kept, resets in ((1, True), (2, False)):
        with torch.no_grad():
            layer.weight.fill_(0.1)
            layer.weight.view(-1)[:n_kept] = 5.0
            layer.threshold.fill_(1.0)
        layer(x)
        if resets:  # density 1/100 <= 1%: t -> 0, M recomputed
            assert torch.all(layer.threshold == 0)
            assert layer.mask.sum() == 100
        else:       # 2% survives
            assert torch.all(layer.threshold == 1.0)
            assert layer.mask.sum() == n_kept


def test_reset_rule_also_in_eval_and_for_conv():
    conv = MaskedConv2d(2, 3, 3).to(F64).eval()
    with torch.no_grad():
        conv.threshold.fill_(10.0)
        conv(torch.randn(1, 2, 5, 5, dtype=F64))
    assert torch.all(conv.threshold == 0)
    assert conv.mask.mean() == 1.0


def test_dfbst_takes_abs_of_t_dst_does_not():
    for method, expected in (("dfbst", 0.0), ("dst", 1.0)):
        layer = MaskedLinear(4, 3, method=method).to(F64)
        with torch.no_grad():
            layer.weight.fill_(0.5)
            layer.weight[0, 0] = 2.0  # keeps density above 1% for dfbst
            layer.threshold.fill_(-1.0)
        layer(torch.randn(2, 4, dtype=F64))
        assert layer.mask[1, 1] == expected


def test_dense_method_has_no_thresholds_or_mask():
    layer = MaskedLinear(4, 3, method="dense")
    assert [n for n, _ in layer.named_parameters()] == ["weight", "bias"]
    x = torch.randn(2, 4)
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))
    assert layer.mask is None
    with pytest.raises(ValueError, match="method"):
        MaskedLinear(4, 3, method="dsr")


def test_parameter_order_and_init():
    torch.manual_seed(0)
    layer = MaskedLinear(30, 5)
    assert [n for n, _ in layer.named_parameters()] == ["weight", "bias", "threshold", "dthreshold"]
    torch.manual_seed(0)
    plain = torch.nn.Linear(30, 5)  # same init recipe and draw order as PyTorch's Linear
    torch.testing.assert_close(layer.weight, plain.weight, rtol=0, atol=0)
    torch.testing.assert_close(layer.bias, plain.bias, rtol=0, atol=0)
    assert torch.all(layer.threshold == 0) and torch.all(layer.dthreshold == 0)
    conv = MaskedConv2d(3, 8, 3, bias=False, method="dst")
    assert [n for n, _ in conv.named_parameters()] == ["weight", "threshold"]


def test_backward_mask_definition():
    layer = MaskedLinear(5, 3, float32_masks=False).to(F64)
    G = torch.tensor([[0.4, -0.1, 0.0, 0.3, -0.2],
                      [0.0, 0.0, 0.0, 0.0, 0.0],      # zero row: Ghat = 0, not nan
                      [1.0, -2.0, 3.0, -4.0, 0.5]], dtype=F64)
    u = torch.tensor([0.15, 0.0, -0.5], dtype=F64)    # u used as is: negative keeps all
    with torch.no_grad():
        layer.dthreshold.copy_(u)
    layer.weight.grad = G.clone()
    g = layer.apply_backward_mask()
    ghat = G.numpy() / np.maximum(np.abs(G.numpy()).sum(1, keepdims=True), 1e-300)
    D = (np.abs(ghat) - u.numpy()[:, None] > 0).astype(float)
    np.testing.assert_array_equal(layer.dmask.numpy(), D)
    assert D[2].all() and not D[1].any()
    np.testing.assert_array_equal(layer.weight.grad.numpy(), G.numpy() * D)
    assert g.requires_grad and not layer.weight.grad.requires_grad
    # dV/du through h: V = std(g); SPEC's formula
    V = torch.std(g.reshape(-1))
    (du,) = torch.autograd.grad(V, layer.dthreshold)
    gn = (G.numpy() * D).ravel()
    dVdg = ((gn - gn.mean()) / ((gn.size - 1) * V.item())).reshape(G.shape)
    expected = -np.sum(dVdg * G.numpy() * tb.h(np.abs(ghat) - u.numpy()[:, None]), axis=1)
    np.testing.assert_allclose(du.numpy(), expected, rtol=1e-12, atol=1e-15)


def test_backward_mask_skips_dst_and_missing_grad():
    assert MaskedLinear(3, 2, method="dst").apply_backward_mask() is None
    assert MaskedLinear(3, 2).apply_backward_mask() is None
