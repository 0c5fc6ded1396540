"""The float32-mask slack of verify (dfbst_np/reference/rounding.py).

Under float32 masks each term of dt (and du) is rounded to float32 on both
sides, and float64 noise in A can round a term to the neighbouring float32
value on the other side. These tests check that the slack is what its
docstring says (against the textbook's own terms), that it absorbs one-ulp
flips in every term of a sum that cancels (which the plain relative
tolerance does not), and that wrong rules still diverge with it in place.
No test depends on the CPU: the flips are made by hand.
"""
import numpy as np
import pytest

from dfbst_np import textbook as tb
from dfbst_np.reference import rounding
from dfbst_np.reference.verdict import ATOL, RTOL, compare_entries


def layer(rng, out=6, fan_in=40, method="dfbst"):
    W = rng.normal(0, 0.3, (out, fan_in))
    t = rng.normal(0, 0.2, out)
    A = rng.normal(0, 1e-3, (out, fan_in))
    return W, t, A


@pytest.mark.parametrize("method", ["dst", "dfbst"])
@pytest.mark.parametrize("reset", [False, True])
def test_threshold_terms_are_the_textbook_terms(method, reset):
    rng = np.random.default_rng(1)
    W, t, A = layer(rng, method=method)
    if reset:
        t = np.full(W.shape[0], 5.0)                     # keeps nothing: the reset fires
    M, t_used = tb.forward_mask(W, t, method)
    if reset:
        assert not t_used.any()
    dW, _ = tb.layer_grads(A, W, t_used, M, method)
    z = np.abs(W) - tb.effective_threshold(t_used, method)[:, None]
    direct = (np.abs(A * W) * tb.h(z)).sum(axis=1)       # sum_j |G_ij| h(z_ij), G = A * W
    got = rounding.threshold_terms(W, t, dW, method)
    np.testing.assert_allclose(got, direct, rtol=1e-12, atol=0)
    assert direct.min() > 0


def test_threshold_terms_of_a_conv_weight_use_its_rows():
    rng = np.random.default_rng(2)
    W4 = rng.normal(0, 0.3, (4, 3, 3, 3))
    A4 = rng.normal(0, 1e-3, W4.shape)
    t = rng.normal(0, 0.2, 4)
    W, A = W4.reshape(4, -1), A4.reshape(4, -1)
    M, t_used = tb.forward_mask(W, t, "dfbst")
    dW, _ = tb.layer_grads(A, W, t_used, M, "dfbst")
    z = np.abs(W) - np.abs(t_used)[:, None]
    np.testing.assert_allclose(rounding.threshold_terms(W4, t, dW.reshape(W4.shape), "dfbst"),
                               (np.abs(A * W) * tb.h(z)).sum(axis=1), rtol=1e-12)


def test_dthreshold_terms_are_the_textbook_terms():
    rng = np.random.default_rng(3)
    dWs = [rng.normal(0, 1e-3, (5, 30)), rng.normal(0, 1e-3, (3, 12))]
    us = [np.full(5, 0.02), np.full(3, -0.01)]
    beta = 0.1
    zs = [np.abs(tb.row_normalise(dW)) - u[:, None] for dW, u in zip(dWs, us)]
    _, dV_dgs = tb.std_and_grad([dW * tb.H(z) for dW, z in zip(dWs, zs)])
    direct = [(np.abs(beta * g * dW) * tb.h(z)).sum(axis=1) for g, dW, z in zip(dV_dgs, dWs, zs)]
    for got, want in zip(rounding.dthreshold_terms(dWs, us, beta), direct):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


def test_spread_follows_the_error_through_one_step():
    eps = {"fc1.threshold": np.array([1.0, 2.0])}
    s = rounding.spread(eps, lr=0.1)
    np.testing.assert_array_equal(s["grad"]["fc1.threshold"], [1.0, 2.0])
    np.testing.assert_array_equal(s["used_grad"]["fc1.threshold"], [1.0, 2.0])
    np.testing.assert_array_equal(s["update"]["fc1.threshold.momentum_buffer"], [1.0, 2.0])
    np.testing.assert_allclose(s["update"]["fc1.threshold"], [0.1, 0.2], rtol=1e-15)


def test_clipping_scales_what_reaches_the_step():
    eps = {"fc1.threshold": np.array([1.0, 2.0])}
    c = rounding.clip_factor(grad_norm=4.0, clip_norm=1.0)
    assert 0.25 <= c <= 0.25 * 1.01
    s = rounding.spread(eps, lr=0.1, clip=c)
    np.testing.assert_array_equal(s["grad"]["fc1.threshold"], [1.0, 2.0])    # before clipping
    np.testing.assert_allclose(s["used_grad"]["fc1.threshold"], [c, 2 * c], rtol=1e-15)
    np.testing.assert_allclose(s["update"]["fc1.threshold"], [0.1 * c, 0.2 * c], rtol=1e-15)
    assert rounding.clip_factor(0.5, 1.0) == 1.0 and rounding.clip_factor(5.0, None) == 1.0


# -- a sum that cancels, rounded on two CPUs -------------------------------
def _cancelling_layer():
    """One row whose dt terms nearly cancel: sum |terms| / |dt| is about 1e4."""
    rng = np.random.default_rng(4)
    fan_in = 64
    W = rng.uniform(0.05, 0.3, (1, fan_in)) * rng.choice([-1, 1], (1, fan_in))
    t = np.array([0.01])
    A = rng.normal(0, 1e-3, (1, fan_in))
    M, t_used = tb.forward_mask(W, t, "dfbst")
    z = np.abs(W) - np.abs(t_used)[:, None]
    terms = A * W * tb.h(z)
    # move the last entry's A so that the terms sum to a small fraction of their size
    j = fan_in - 1
    A[0, j] -= (terms.sum() - 1e-4 * np.abs(terms).sum()) / (W[0, j] * tb.h(z)[0, j])
    return W, t, A, M, t_used


def _dt_rounded(A, W, t_used, M, method, flip=0, h=tb.h, tau=None, s=None):
    """dt with G = A * W rounded to float32, each term moved ``flip`` float32 ulps."""
    tau = tb.effective_threshold(t_used, method) if tau is None else tau
    z = np.abs(W) - tau[:, None]
    G = (A * W).astype(np.float32)
    if flip:
        G = np.nextafter(G, np.float32(np.inf) if flip > 0 else np.float32(-np.inf))
    s = tb.sign_s(t_used, method) if s is None else s
    return -s * (G.astype(np.float64) * h(z)).sum(axis=1)


def test_one_ulp_flips_in_every_term_are_allowed_and_needed():
    W, t, A, M, t_used = _cancelling_layer()
    ours = _dt_rounded(A, W, t_used, M, "dfbst")
    dW, dt64 = tb.layer_grads(A, W, t_used, M, "dfbst", float32_masks=True)
    np.testing.assert_allclose(ours, dt64, rtol=1e-12)   # the textbook rounds the same way
    slack = rounding.FLOAT32_FLIP * rounding.threshold_terms(W, t, dW, "dfbst")
    for flip in (1, -1):
        theirs = _dt_rounded(A, W, t_used, M, "dfbst", flip=flip)
        # the premise: the plain relative tolerance calls this correct rounding a divergence
        assert compare_entries(ours, theirs, RTOL, ATOL)["mismatched"] == 1
        assert compare_entries(ours, theirs, RTOL, ATOL + slack)["mismatched"] == 0


def _wrong_slope(x):
    a = np.abs(x)
    return np.where(a <= 0.4, 1 - 2 * a, np.where(a <= 1, 0.4, 0.0))


@pytest.mark.parametrize("wrong", ["slope 1-2|x|", "t for |t|", "s(0) = -1", "h = 1", "no h"])
def test_wrong_rules_still_diverge_with_the_slack(wrong):
    rng = np.random.default_rng(5)
    W, t, A = layer(rng)
    t[0] = 0.0                     # s(0) matters on this row
    t[1] = -abs(t[1])              # t for |t| matters on this one
    M, t_used = tb.forward_mask(W, t, "dfbst")
    dW, ours = tb.layer_grads(A, W, t_used, M, "dfbst", float32_masks=True)
    slack = rounding.FLOAT32_FLIP * rounding.threshold_terms(W, t, dW, "dfbst")
    kw = {"slope 1-2|x|": dict(h=_wrong_slope), "t for |t|": dict(tau=t_used),
          "s(0) = -1": dict(s=np.where(t_used > 0, 1.0, -1.0)), "h = 1": dict(h=np.ones_like),
          "no h": dict(h=lambda z: (z > 0).astype(z.dtype))}[wrong]
    theirs = _dt_rounded(A, W, t_used, M, "dfbst", **kw)
    res = compare_entries(ours, theirs, RTOL, ATOL + slack)
    assert res["mismatched"] >= 1
    # and not by a hair: the worst entry is far outside the slack
    k = res["worst_index"][0]
    assert abs(ours[k] - theirs[k]) > 100 * (RTOL * abs(ours[k]) + slack[k])
