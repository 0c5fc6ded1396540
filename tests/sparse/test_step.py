"""H and its estimators against their definitions (a step has no useful finite difference)."""
import numpy as np
import pytest

from dfbst_np.sparse.step import clipped, get_estimator, identity, long_tailed, step


def test_step_is_strict():
    x = np.array([-1.0, -1e-300, 0.0, 1e-300, 2.0])
    np.testing.assert_array_equal(step(x), [0, 0, 0, 1, 1])


@pytest.mark.parametrize("x, h", [
    (0.0, 2.0), (0.1, 1.6), (-0.1, 1.6), (0.4, 0.4), (-0.4, 0.4), (0.4000001, 0.4),
    (0.7, 0.4), (1.0, 0.4), (-1.0, 0.4), (1.0000001, 0.0), (-3.0, 0.0)])
def test_long_tailed_matches_definition(x, h):
    got = long_tailed(np.array([x]))[0]
    assert abs(got - h) < 1e-12


def test_long_tailed_keeps_dtype():
    assert long_tailed(np.zeros(3, np.float32)).dtype == np.float32


def test_identity_and_clipped():
    x = np.array([-2.0, -1.0, 0.0, 0.5, 1.0, 1.5])
    np.testing.assert_array_equal(identity(x), np.ones(6))
    np.testing.assert_array_equal(clipped(x), [0, 1, 1, 1, 1, 0])


def test_unknown_estimator_is_named():
    with pytest.raises(ValueError, match="unknown estimator 'nope'"):
        get_estimator("nope")
