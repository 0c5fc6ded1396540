"""The trainer's gradient norm: float64 where float32 would overflow, and a named error for NaN/inf.

What is proven: a float32 gradient whose squared norm overflows float32
(entries of 1e20) gives its true norm (computed again in float64) and is
clipped to the clip norm, not reported as non-finite; a NaN or an inf in a
gradient raises FloatingPointError naming that parameter (not StopIteration
or a message without the name).
"""
import numpy as np
import pytest

from dfbst_np.train.trainer import _checked_norm


def test_float32_overflow_is_a_finite_norm():
    grads = {"a.weight": np.full((3, 4), 1e20, np.float32), "a.bias": np.ones(3, np.float32)}
    norm, sq = _checked_norm(grads)
    assert np.isfinite(norm) and norm == pytest.approx(np.sqrt(12 * 1e40 + 3), rel=1e-6)
    assert sq[1] == 3.0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_gradient_is_named(bad):
    grads = {"a.weight": np.ones((3, 4), np.float32), "b.bias": np.ones(3, np.float32)}
    grads["b.bias"][1] = bad
    with pytest.raises(FloatingPointError, match="'b.bias'"):
        _checked_norm(grads)

