"""DFBST's backward mask in NumPy against torch autograd of the same construction.

What is proven: :func:`dfbst_np.sparse.backward_mask.backward_mask` gives the
same D (bit for bit), masked dW = dW * D, V and d(beta * V)/du as autograd
through the construction the reference layers use, written out here:

    Ghat = nan_to_num(dW / sum_j |dW_ij|)        (row normalisation; 0/0 -> 0)
    D    = BinaryStep(|Ghat| - u)                 (u: a leaf requiring grad)
    g    = dW * D
    V    = torch.std(cat(g of every layer))       (unbiased, n - 1)
    u.grad after (beta * V).backward()

with several layers at once (linear and conv shaped, so V and its mean span
layers and every u_i's gradient depends on every layer), a row whose
gradient is all zero in two layers (one with u < 0 there, so D = 1 on a
zero row), negative and positive u spread so that |Ghat| - u visits every
branch of the estimator h, and ``float32_masks`` False and True on both sides.

Tolerances: 1e-10 relative, the issue's bound. With float32 masks the
gradient reaching D (beta * dV/dg * dW) is rounded to float32 on both sides;
the two float64 values before rounding differ in the last bit at most, and
for these few thousand entries none sits on a float32 rounding boundary, so
agreement stays at float64 rounding (measured <= 1.1e-14 for both, the
largest on u's gradient, a sum with cancellation). The float32 rounding
itself moves u's gradient by 1e-9 to 3e-8, which the test also checks, so the
float32 cases are not the float64 ones in disguise.
"""
import numpy as np
import pytest
import torch

from dfbst_np.reference.layers import BinaryStep
from dfbst_np.sparse.backward_mask import backward_mask
from tests.helpers import rel_err

TOL = 1e-10
# (out, fan_in) of the layers' dW matrices: linear, conv 5x5x3, conv 3x3x16, linear
LAYER_SHAPES = [(12, 40), (8, 75), (16, 144), (10, 33)]
ZERO_ROWS = {0: 3, 2: 5}     # layer -> a row whose gradient is all zero


def make_case(seed):
    """Per-layer dW (with zero rows) and u of mixed signs and scales."""
    rng = np.random.default_rng(seed)
    grads, us = [], []
    for k, (out, fan_in) in enumerate(LAYER_SHAPES):
        dW = rng.standard_normal((out, fan_in)) * rng.lognormal(0, 2, size=(out, 1))
        dW[:, ::7] = 0.0                      # exact zeros inside rows too
        if k in ZERO_ROWS:
            dW[ZERO_ROWS[k]] = 0.0
        # u per row around the scale of |Ghat| (~1 / fan_in), both signs, a
        # few far beyond 1 so that h's tail and its zero are visited
        u = rng.choice([-1.0, 1.0], size=out) * rng.uniform(0, 2.5, size=out) / fan_in
        u[0] = 0.0
        u[1] = -1.5
        u[2] = 0.6
        u[-1] = 1.2
        if k in ZERO_ROWS:
            u[ZERO_ROWS[k]] = -0.3 if k == 0 else 0.3   # D = 1 resp. 0 on a zero row
        grads.append(dW)
        us.append(u)
    return grads, us


def torch_backward_mask(grads, us, beta, float32_masks):
    """The reference construction with autograd (see the module docstring)."""
    u_leaves = [torch.tensor(u, requires_grad=True) for u in us]
    D, g = [], []
    for dW, u in zip(grads, u_leaves):
        rows = torch.from_numpy(dW)
        ghat = torch.nan_to_num(rows / rows.abs().sum(dim=1, keepdim=True))
        d = BinaryStep.apply(ghat.abs() - u.view(-1, 1), float32_masks)
        D.append(d)
        g.append(rows * d)
    V = torch.std(torch.cat([gi.reshape(-1) for gi in g]))
    (beta * V).backward()
    return ([d.detach().numpy() for d in D], [gi.detach().numpy() for gi in g], float(V.detach()),
            [u.grad.numpy() for u in u_leaves])


@pytest.mark.parametrize("beta", [0.1, 1.0])
@pytest.mark.parametrize("float32_masks", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_backward_mask_matches_autograd(seed, float32_masks, beta):
    grads, us = make_case(seed)
    copies = [g.copy() for g in grads]
    bm = backward_mask(grads, us, scale=beta, float32_masks=float32_masks)
    D_t, g_t, V_t, gu_t = torch_backward_mask(grads, us, beta, float32_masks)

    for g, c in zip(grads, copies):                      # inputs untouched
        np.testing.assert_array_equal(g, c)
    errs = {"V": rel_err(bm.V, V_t)}
    for k in range(len(LAYER_SHAPES)):
        np.testing.assert_array_equal(bm.D[k], D_t[k])
        errs[f"masked{k}"] = rel_err(bm.masked[k], g_t[k])
        errs[f"grad_u{k}"] = rel_err(bm.grad_u[k], gu_t[k])
    assert max(errs.values()) <= TOL, errs
    if float32_masks:
        # the rounding is real: float64 masks give a u-gradient far outside TOL
        exact = backward_mask(grads, us, scale=beta, float32_masks=False)
        assert max(rel_err(a, b) for a, b in zip(exact.grad_u, bm.grad_u)) > 10 * TOL

    # the case is what it claims to be
    for k, row in ZERO_ROWS.items():
        assert np.all(bm.grad_u[k][row] == 0) and np.all(gu_t[k][row] == 0)
        assert np.all(bm.D[k][row] == (1.0 if us[k][row] < 0 else 0.0))
    all_D = np.concatenate([d.ravel() for d in bm.D])
    assert 0 < all_D.mean() < 1
    z = np.concatenate([(np.abs(g / np.maximum(np.abs(g).sum(1, keepdims=True), 1e-300)) - u[:, None]).ravel()
                        for g, u in zip(grads, us)])
    assert (np.abs(z) <= 0.4).any() and ((np.abs(z) > 0.4) & (np.abs(z) <= 1)).any() and (np.abs(z) > 1).any()
    nonzero_u = [gu[np.abs(gu) > 0] for gu in bm.grad_u]
    assert all(len(v) > 0 for v in nonzero_u)


def test_grad_u_is_scale_times_dV_du_without_float32_masks():
    """Without float32 rounding, scale is only a factor (what the trainer relies on)."""
    grads, us = make_case(5)
    a = backward_mask(grads, us, scale=1.0)
    b = backward_mask(grads, us, scale=0.1)
    for ga, gb in zip(a.grad_u, b.grad_u):
        assert rel_err(gb, 0.1 * ga) <= 1e-15
