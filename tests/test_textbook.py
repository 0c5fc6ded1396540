"""The textbook functions against PyTorch autograd through the reference layers (float64).

What is proven, at 1e-12 relative (SPEC section 6): H and h by their
definitions; the forward mask with the reset rule, the gradient rule (dW and
dt through the STE), the penalty, the masked product's backward, and the
backward mask with V and dV/du, for dst and dfbst, float32 masks off and on,
linear and conv weights, thresholds of both signs and zero, the reset firing,
u > 0 and u < 0, and a row of zeros in dW. The inputs are never modified.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dfbst_np import textbook as tb
from dfbst_np.reference.layers import MaskedConv2d, MaskedLinear
from tests.helpers import rel_err
from tests.sparse.test_backward_mask_parity import torch_backward_mask

TOL = 1e-12


def test_step_and_estimator_by_definition():
    x = np.array([-2.0, -1.0, -0.7, -0.4, -0.1, 0.0, 1e-300, 0.1, 0.4, 0.4000001, 0.7, 1.0, 1.0000001, 3.0])
    assert tb.H(x).tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1]
    expect = [0.0, 0.4, 0.4, 0.4, 1.6, 2.0, 2.0, 1.6, 0.4, 0.4, 0.4, 0.4, 0.0, 0.0]
    np.testing.assert_allclose(tb.h(x), expect, rtol=0, atol=1e-15)
    for dt in (np.float32, np.float64):
        assert tb.H(x.astype(dt)).dtype == dt and tb.h(x.astype(dt)).dtype == dt


def _torch_linear(W, b, t, method, float32_masks):
    layer = MaskedLinear(W.shape[1], W.shape[0], method=method, float32_masks=float32_masks).double()
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(W))
        layer.bias.copy_(torch.from_numpy(b))
        layer.threshold.copy_(torch.from_numpy(t))
    return layer


THRESHOLDS = {
    "mixed signs": lambda rng, out: rng.uniform(-0.08, 0.08, out),
    "zero": lambda rng, out: np.zeros(out),
    "negative": lambda rng, out: -rng.uniform(0.0, 0.06, out),
    "reset fires": lambda rng, out: np.full(out, 5.0),
    "reset fires, t < 0 (dfbst; dst keeps all)": lambda rng, out: np.full(out, -5.0),
}


@pytest.mark.parametrize("float32_masks", [False, True])
@pytest.mark.parametrize("method", ["dst", "dfbst"])
@pytest.mark.parametrize("case", sorted(THRESHOLDS))
def test_linear_mask_and_gradient_rule_equal_autograd(case, method, float32_masks):
    rng = np.random.default_rng(0)
    out, fan_in, n = 9, 14, 5
    W = rng.uniform(-0.1, 0.1, (out, fan_in))
    b = rng.uniform(-0.1, 0.1, out)
    t = THRESHOLDS[case](rng, out)
    X, dY = rng.standard_normal((n, fan_in)), rng.standard_normal((n, out))
    W0, t0 = W.copy(), t.copy()

    M, t_new = tb.forward_mask(W, t, method)
    Y = tb.masked_forward(X, W, M, b)
    A, dX = tb.masked_backward(dY, X, W, M)
    dW, dt = tb.layer_grads(A, W, t_new, M, method, float32_masks=float32_masks)
    assert np.array_equal(W, W0) and np.array_equal(t, t0), "inputs were modified"

    layer = _torch_linear(W, b, t, method, float32_masks)
    x = torch.from_numpy(X).requires_grad_()
    y = layer(x)
    (y * torch.from_numpy(dY)).sum().backward()
    assert np.array_equal(M, layer.mask.double().numpy())
    assert np.array_equal(t_new, layer.threshold.detach().numpy())
    if case == "reset fires" or (case.startswith("reset") and method == "dfbst"):
        assert np.all(t_new == 0) and M.mean() > tb.RESET_DENSITY
    assert rel_err(Y, y.detach().numpy()) <= TOL
    assert rel_err(dX, x.grad.numpy()) <= TOL
    assert rel_err(dW, layer.weight.grad.numpy()) <= TOL
    assert rel_err(dt, layer.threshold.grad.numpy()) <= TOL


@pytest.mark.parametrize("method", ["dst", "dfbst"])
@pytest.mark.parametrize("stride,padding", [(1, 0), (2, 1)])
def test_conv_gradient_rule_equals_autograd(method, stride, padding):
    rng = np.random.default_rng(1)
    out, cin, k = 6, 3, 3
    layer = MaskedConv2d(cin, out, k, stride=stride, padding=padding, method=method,
                         float32_masks=False).double()
    t = rng.uniform(-0.1, 0.1, out)
    with torch.no_grad():
        layer.threshold.copy_(torch.from_numpy(t))
    W = layer.weight.detach().numpy().copy()
    x = torch.from_numpy(rng.standard_normal((2, cin, 7, 7)))
    y = layer(x)
    G = torch.from_numpy(rng.standard_normal(tuple(y.shape)))
    (y * G).sum().backward()
    A = torch.nn.grad.conv2d_weight(x, W.shape, G, stride=stride, padding=padding).numpy()

    W2 = W.reshape(out, -1)
    M, t_new = tb.forward_mask(W2, t, method)
    dW, dt = tb.layer_grads(A.reshape(out, -1), W2, t_new, M, method)
    assert np.array_equal(M, layer.mask.double().numpy().reshape(out, -1))
    assert rel_err(dW, layer.weight.grad.numpy().reshape(out, -1)) <= TOL
    assert rel_err(dt, layer.threshold.grad.numpy()) <= TOL


def test_dense_method_has_no_mask_and_plain_gradient():
    rng = np.random.default_rng(2)
    W, A = rng.standard_normal((4, 6)), rng.standard_normal((4, 6))
    M, t_new = tb.forward_mask(W, None, "dense")
    dW, dt = tb.layer_grads(A, W, None, M, "dense")
    assert np.all(M == 1) and t_new is None and dt is None
    assert np.array_equal(dW, A)


def test_threshold_penalty_equals_autograd():
    t = np.array([-0.3, 0.0, 0.2, 1.5])
    value, grad = tb.threshold_penalty(t, 5e-6)
    tt = torch.from_numpy(t).requires_grad_()
    p = 5e-6 * torch.exp(-tt).sum()
    p.backward()
    assert abs(value - p.item()) <= TOL * abs(p.item())
    assert rel_err(grad, tt.grad.numpy()) <= TOL


SHAPES = [(12, 40), (8, 75), (16, 144)]


def _dWs_and_us(rng):
    dWs = [rng.standard_normal(s) * rng.uniform(0.1, 3.0) for s in SHAPES]
    dWs[0][3] = 0.0                                   # a row with no gradient, u < 0 there
    dWs[2][5] = 0.0
    us = [rng.uniform(-0.02, 0.06, s[0]) for s in SHAPES]
    us[0][3] = -0.01
    return dWs, us


@pytest.mark.parametrize("float32_masks", [False, True])
def test_backward_mask_equals_autograd(float32_masks):
    rng = np.random.default_rng(3)
    dWs, us = _dWs_and_us(rng)
    copies = [d.copy() for d in dWs], [u.copy() for u in us]
    beta = 0.1
    Ds, gs, V, dV_du = tb.backward_mask(dWs, us, scale=beta, float32_masks=float32_masks)
    assert all(np.array_equal(a, b) for a, b in zip(dWs + us, copies[0] + copies[1]))

    D_t, g_t, V_t, dV_du_t = torch_backward_mask(dWs, us, beta, float32_masks)

    for D, g, d, gg in zip(Ds, gs, D_t, g_t):
        assert np.array_equal(D, d.astype(D.dtype))
        assert rel_err(g, gg) <= TOL
    assert all(0 < D.mean() < 1 for D in Ds), "u must drop some entries and keep others"
    assert abs(V - V_t) <= TOL * V_t
    for mine, theirs in zip(dV_du, dV_du_t):
        assert rel_err(mine, theirs) <= TOL
    assert np.all(Ds[0][3] == 1) and np.all(gs[0][3] == 0), "a zero row with u < 0 keeps D = 1, g = 0"


def test_backward_mask_unscaled_is_dV_du():
    rng = np.random.default_rng(4)
    dWs, us = _dWs_and_us(rng)
    _, _, V1, d1 = tb.backward_mask(dWs, us)
    _, _, V2, d2 = tb.backward_mask(dWs, us, scale=0.1)
    assert V1 == V2
    for a, b in zip(d1, d2):
        assert rel_err(0.1 * a, b) <= TOL


def test_std_of_equal_entries_has_zero_gradient():
    V, grads = tb.std_and_grad([np.full((2, 3), 0.5), np.full((1, 4), 0.5)])
    assert V == 0.0 and all(np.all(g == 0) for g in grads)


def test_row_normalise_rows_sum_to_one_in_l1():
    dW = np.array([[1.0, -3.0, 0.0], [0.0, 0.0, 0.0], [2.0, 2.0, -4.0]])
    G = tb.row_normalise(dW)
    assert np.allclose(np.abs(G).sum(axis=1), [1.0, 0.0, 1.0])
    assert np.array_equal(np.sign(G), np.sign(dW))


def test_masked_product_equals_torch_linear():
    rng = np.random.default_rng(5)
    X, W, b = rng.standard_normal((4, 7)), rng.standard_normal((3, 7)), rng.standard_normal(3)
    M = (rng.random((3, 7)) > 0.5).astype(float)
    dY = rng.standard_normal((4, 3))
    x, w = torch.from_numpy(X).requires_grad_(), torch.from_numpy(W * M).requires_grad_()
    y = F.linear(x, w, torch.from_numpy(b))
    (y * torch.from_numpy(dY)).sum().backward()
    A, dX = tb.masked_backward(dY, X, W, M)
    assert rel_err(tb.masked_forward(X, W, M, b), y.detach().numpy()) <= TOL
    assert rel_err(A, w.grad.numpy()) <= TOL and rel_err(dX, x.grad.numpy()) <= TOL
