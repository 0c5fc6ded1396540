"""The forward mask, the reset rule, and the gradient rule against SPEC's equations.

The gradient rule is checked entry by entry against a literal loop over
SPEC's formulas (the STE is a definition, not a derivative); parity with
PyTorch autograd is in tests/reference.
"""
import numpy as np
import pytest

from dfbst_np import textbook as tb
from dfbst_np.sparse.entries import Entries
from dfbst_np.sparse.mask_rule import forward_mask, layer_grads, threshold_penalty
from dfbst_np.sparse.step import long_tailed


def test_dfbst_uses_abs_t_and_dst_uses_t(rng):
    w = rng.normal(size=(4, 50))
    t = np.array([0.5, -0.5, 0.0, -2.0])
    m_dfbst = forward_mask(w, t.copy(), "dfbst").M
    m_dst = forward_mask(w, t.copy(), "dst").M
    np.testing.assert_array_equal(m_dfbst, (np.abs(w) > np.abs(t)[:, None]))
    np.testing.assert_array_equal(m_dst, (np.abs(w) > t[:, None]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mask_is_the_step_of_z_at_ties_and_tiny_differences(dtype):
    """M compares |W| with tau directly; it must equal H(|W| - tau) entry for entry,
    also where |W| == tau (H(0) = 0), one ulp either side, and for subnormal gaps."""
    tau = np.array([0.25, 1e-37, 0.0], dtype=dtype)
    tiny = np.finfo(dtype).smallest_subnormal
    rows = []
    for v in tau:
        rows.append([v, np.nextafter(v, dtype(1)), np.nextafter(v, dtype(-1)), -v, v + tiny, 0.0,
                     -np.nextafter(v, dtype(1))])
    w = np.array(rows, dtype=dtype)
    fm = forward_mask(w, tau.copy(), "dfbst")
    z = np.abs(w) - tau[:, None]
    np.testing.assert_array_equal(fm.keep, z > 0)
    np.testing.assert_array_equal(fm.z, z)              # made on first read, the same numbers
    assert fm.keep[0, 1] and not fm.keep[0, 0] and not fm.keep[0, 2] and fm.keep[0, 6]


@pytest.mark.parametrize("method", ["dst", "dfbst"])
def test_reset_fires_at_one_percent(rng, method):
    w = rng.uniform(-1, 1, size=(10, 100))
    t = np.full(10, 0.995)                      # keeps about 0.5 % of the weights
    fm = forward_mask(w, t, method)
    assert fm.reset and np.all(t == 0)
    np.testing.assert_array_equal(fm.M, np.abs(w) > 0)
    t2 = np.full(10, 0.9)                       # keeps about 10 %: no reset
    fm2 = forward_mask(w, t2, method)
    assert not fm2.reset and np.all(t2 == 0.9)


def literal_grads(A, w, t, method):
    """SPEC's dW and dt: the textbook's rule with the textbook's mask."""
    return tb.layer_grads(A, w, t, tb.forward_mask(w, t, method)[0], method)


@pytest.mark.parametrize("method", ["dst", "dfbst"])
def test_gradient_rule_matches_spec(rng, method):
    w = rng.normal(scale=0.5, size=(5, 12))
    t = np.array([0.3, -0.3, 0.0, 0.8, -0.05])
    A = rng.normal(size=w.shape)
    fm = forward_mask(w, t.copy(), method)
    dW, dt = layer_grads(Entries(A), w, t, fm, method)
    dW = dW.values
    dW_ref, dt_ref = literal_grads(A, w, t, method)
    np.testing.assert_allclose(dW, dW_ref, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(dt, dt_ref, rtol=1e-13, atol=1e-15)


def test_float32_masks_round_only_the_ste_terms(rng):
    w = rng.normal(size=(6, 30))
    t = np.full(6, 0.2)
    A = rng.normal(size=w.shape)
    fm = forward_mask(w, t.copy(), "dfbst")
    exact = [(g.values if isinstance(g, Entries) else g) for g in layer_grads(Entries(A), w, t, fm, "dfbst")]
    rounded = [(g.values if isinstance(g, Entries) else g)
               for g in layer_grads(Entries(A), w, t, fm, "dfbst", float32_masks=True)]
    for a, b in zip(exact, rounded):
        err = np.abs(a - b).max() / np.abs(a).max()
        assert 0 < err < 1e-6          # float32 rounding, not a different formula
    G32 = (A * w).astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(rounded[1], -(G32 * long_tailed(fm.z)).sum(1), rtol=1e-13)


def test_threshold_penalty_matches_finite_differences(rng):
    t = rng.normal(size=7)
    alpha = 5e-3
    value, grad = threshold_penalty(t, alpha)
    assert value == pytest.approx(alpha * np.exp(-t).sum(), rel=1e-14)
    eps = 1e-6
    for i in range(7):
        tp, tm = t.copy(), t.copy()
        tp[i] += eps
        tm[i] -= eps
        fd = (threshold_penalty(tp, alpha)[0] - threshold_penalty(tm, alpha)[0]) / (2 * eps)
        assert abs(fd - grad[i]) <= 1e-8 * abs(grad[i])
