import numpy as np
import pytest

from dfbst_np.nn.dropout import Dropout
from tests.helpers import rel_err
from tests.nn.fd import as_child, assert_fd
from tests.nn.parity import t64, torch


@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_keeps_about_one_minus_p_and_scales_by_its_inverse(p, rng):
    x = rng.uniform(1, 2, (100, 100))
    y = Dropout(p, rng=1, dtype=np.float64).forward(x)
    kept = y != 0
    assert abs(kept.mean() - (1 - p)) < 4 * np.sqrt(p * (1 - p) / x.size)
    np.testing.assert_allclose(y[kept], x[kept] / (1 - p), rtol=1e-15)


@pytest.mark.parametrize("p", [0.3, 0.5])
def test_scaling_convention_is_torchs(p, rng):
    x = rng.uniform(1, 2, (50, 40))
    ty = torch.nn.functional.dropout(t64(x), p, training=True).numpy()
    kept = ty != 0
    assert rel_err(ty[kept], x[kept] / (1 - p)) <= 1e-15


@pytest.mark.parametrize("shape", [(3, 4), (1, 2, 3, 3), (2, 3, 5)])
@pytest.mark.parametrize("p", [0.25, 0.5])
def test_matches_finite_differences_with_a_fixed_mask(shape, p, rng):
    layer = Dropout(p, dtype=np.float64)
    reset = lambda: setattr(layer, "rng", np.random.default_rng(5))  # noqa: E731
    assert_fd(layer, rng.standard_normal(shape), rng, reset=reset)


def test_backward_uses_the_forward_mask(rng):
    layer = Dropout(0.5, rng=3, dtype=np.float64)
    x = rng.uniform(1, 2, (6, 7))
    y = layer.forward(x)
    dy = rng.standard_normal(x.shape)
    np.testing.assert_array_equal(layer.backward(dy), dy * (y / x))


def test_seeded_masks_repeat_and_differ_by_seed():
    x = np.ones((20, 20), np.float32)
    a, b, c = (Dropout(0.5, rng=s).forward(x) for s in (3, 3, 4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    gen = np.random.default_rng(9)
    layer = Dropout(0.5, rng=gen)
    assert layer.rng is gen
    assert not np.array_equal(layer.forward(x), layer.forward(x))   # a stream, not a fixed mask


def test_eval_is_the_identity(rng):
    layer = Dropout(0.5).eval()
    x = rng.standard_normal((4, 5)).astype(np.float32)
    assert layer.forward(x) is x
    dy = rng.standard_normal((4, 5)).astype(np.float32)
    np.testing.assert_array_equal(layer.backward(dy), dy)


def test_p_zero_and_one(rng):
    x = rng.standard_normal((4, 5)).astype(np.float32)
    np.testing.assert_array_equal(Dropout(0.0).forward(x), x)
    layer = Dropout(1.0)
    y = layer.forward(x)
    assert y.dtype == np.float32 and not y.any()
    assert not layer.backward(np.ones_like(x)).any()
    assert not torch.nn.functional.dropout(torch.from_numpy(x), 1.0, training=True).any()


def test_float32_stays_float32(rng):
    layer = Dropout(0.5)
    y = layer.forward(rng.standard_normal((4, 5)).astype(np.float32))
    assert y.dtype == np.float32
    assert layer.backward(np.ones_like(y)).dtype == np.float32


@pytest.mark.parametrize("p", [-0.1, 1.1])
def test_bad_p(p):
    with pytest.raises(ValueError, match="Dropout: p"):
        Dropout(p)


@pytest.mark.parametrize("x, error", [
    (np.zeros(5, np.float32), ValueError),
    (np.zeros((2, 3), np.int32), TypeError),
    (np.array([[np.nan]], np.float32), FloatingPointError),
])
@pytest.mark.parametrize("training", [True, False])
def test_rejects_bad_input_naming_the_layer(x, error, training):
    layer = as_child(Dropout(0.5), "drop1").train(training)
    with pytest.raises(error, match=r"drop1 \(Dropout\)"):
        layer.forward(x)
