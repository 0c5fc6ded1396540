import numpy as np
import pytest

from dfbst_np.nn.activations import ReLU
from tests.helpers import rel_err
from tests.nn.fd import as_child, assert_fd, spread
from tests.nn.parity import TOL, t64, torch

SHAPES = [(2, 5), (1, 7), (3, 2, 7), (1, 3, 4, 5)]


@pytest.mark.parametrize("shape", SHAPES)
def test_relu_matches_finite_differences(shape, rng):
    assert_fd(ReLU(dtype=np.float64), spread(shape, rng), rng)


@pytest.mark.parametrize("shape", SHAPES)
def test_relu_matches_torch_including_exact_zeros(shape, rng):
    x = rng.standard_normal(shape)
    x.flat[::3] = 0.0                       # PyTorch's gradient at 0 is 0
    dy = rng.standard_normal(shape)
    relu = ReLU(dtype=np.float64)
    y, dx = relu.forward(x), relu.backward(dy)
    tx = t64(x, grad=True)
    ty = torch.relu(tx)
    ty.backward(t64(dy))
    assert rel_err(y, ty.detach().numpy()) <= TOL
    assert rel_err(dx, tx.grad.numpy()) <= TOL
    assert np.all(dx[x == 0] == 0)


def test_relu_keeps_dtype_and_shape(rng):
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    relu = ReLU()
    y = relu.forward(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert relu.backward(np.ones_like(y)).dtype == np.float32


@pytest.mark.parametrize("x, error", [
    (np.zeros(5, np.float32), ValueError),                    # no batch axis
    (np.zeros((2, 3, 4, 5, 6), np.float32), ValueError),      # rank 5
    (np.zeros((2, 3), np.int64), TypeError),
    (np.zeros((2, 3), np.float64), TypeError),                # not cast silently
    (np.array([[1.0, np.nan]], np.float32), FloatingPointError),
    (np.array([[1.0, np.inf]], np.float32), FloatingPointError),
    ([[1.0, 2.0]], TypeError),
])
def test_relu_rejects_bad_input_naming_the_layer(x, error):
    relu = as_child(ReLU(), "act1")
    with pytest.raises(error, match=r"act1 \(ReLU\)"):
        relu.forward(x)


def test_relu_rejects_gradient_of_wrong_shape():
    relu = as_child(ReLU(), "act1")
    relu.forward(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"act1 \(ReLU\).*\(2, 3\)"):
        relu.backward(np.ones((3, 2), np.float32))


@pytest.mark.parametrize("dtype, itype", [(np.float32, np.int32), (np.float64, np.int64)])
def test_relu_is_bitwise_maximum_and_masked_product(dtype, itype, rng):
    """y is max(x, 0) and dx is dy * [x > 0], bit for bit (signs of zeros included)."""
    x = rng.standard_normal((3, 4, 5, 6)).astype(dtype)
    x.flat[::7] = 0.0
    x.flat[1::7] = -0.0
    x.flat[2::7] = -np.finfo(dtype).tiny / 4         # negative subnormal
    x.flat[3::7] = np.finfo(dtype).tiny / 4          # positive subnormal
    x.flat[4::7] = np.finfo(dtype).max
    dy = rng.standard_normal(x.shape).astype(dtype)
    dy.flat[::5] = -0.0
    relu = ReLU(dtype=dtype)
    y = relu.forward(x)
    dx = relu.backward(dy)
    np.testing.assert_array_equal(y.view(itype), np.maximum(x, 0).view(itype))
    np.testing.assert_array_equal(dx.view(itype), np.multiply(dy, x > 0).view(itype))
    assert y.dtype == dx.dtype == dtype
