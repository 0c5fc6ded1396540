import numpy as np
import pytest

from dfbst_np.nn.shape import Flatten
from tests.helpers import rel_err
from tests.nn.fd import as_child, assert_fd
from tests.nn.parity import TOL, t64, torch


@pytest.mark.parametrize("start_dim, shape", [(1, (2, 3, 4, 5)), (1, (1, 7)), (2, (2, 3, 4, 5)),
                                              (1, (3, 2, 5))])
def test_flatten_matches_torch_and_fd(start_dim, shape, rng):
    x = rng.standard_normal(shape)
    layer = Flatten(start_dim, dtype=np.float64)
    y = layer.forward(x)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    tx = t64(x, grad=True)
    ty = torch.nn.Flatten(start_dim)(tx)
    ty.backward(t64(dy))
    assert y.shape == tuple(ty.shape)
    assert rel_err(y, ty.detach().numpy()) <= TOL
    assert rel_err(dx, tx.grad.numpy()) <= TOL
    assert_fd(layer, x, rng)


def test_flatten_rejects_start_dim_zero():
    with pytest.raises(ValueError, match="Flatten: start_dim"):
        Flatten(0)


@pytest.mark.parametrize("x, error", [
    (np.zeros(5, np.float32), ValueError),
    (np.zeros((2, 3), np.float64), TypeError),
    (np.array([[np.inf]], np.float32), FloatingPointError),
])
def test_flatten_rejects_bad_input_naming_the_layer(x, error):
    layer = as_child(Flatten(), "flat")
    with pytest.raises(error, match=r"flat \(Flatten\)"):
        layer.forward(x)
