import numpy as np
import pytest

from dfbst_np.nn.pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from tests.helpers import rel_err
from tests.nn.fd import as_child, assert_fd, spread
from tests.nn.parity import TOL, t64, torch

F = torch.nn.functional

# (kernel_size, stride, padding, input shape)
CASES = [
    (2, None, 0, (2, 3, 4, 4)),         # the LeNet / VGG pool
    (3, 2, 1, (2, 2, 7, 7)),            # ResNet's stem pool: overlapping windows
    (2, 2, 1, (1, 1, 5, 5)),            # padding, batch of 1, odd size
    (3, 1, 1, (1, 2, 5, 6)),            # stride 1, non-square input
    ((2, 3), (1, 2), (1, 1), (2, 1, 5, 7)),
    (3, 3, 0, (1, 1, 7, 8)),            # floor mode drops the leftover rows/columns
]
IDS = [f"k{k}-s{s}-p{p}-{'x'.join(map(str, shape))}" for k, s, p, shape in CASES]


def torch_pool(kind, x, dy, k, s, p):
    tx = t64(x, grad=True)
    if kind == "max":
        ty = F.max_pool2d(tx, k, s, p)
    else:
        ty = F.avg_pool2d(tx, k, s, p, count_include_pad=True)
    ty.backward(t64(dy))
    return ty.detach().numpy(), tx.grad.numpy()


def run(layer, x, dy):
    y = layer.forward(x)
    return y, layer.backward(dy)


@pytest.mark.parametrize("cls", [MaxPool2d, AvgPool2d])
@pytest.mark.parametrize("k, s, p, shape", CASES, ids=IDS)
def test_pool_matches_finite_differences(cls, k, s, p, shape, rng):
    assert_fd(cls(k, s, p, dtype=np.float64), spread(shape, rng), rng)


@pytest.mark.parametrize("kind, cls", [("max", MaxPool2d), ("avg", AvgPool2d)])
@pytest.mark.parametrize("k, s, p, shape", CASES, ids=IDS)
def test_pool_matches_torch(kind, cls, k, s, p, shape, rng):
    x = rng.standard_normal(shape)
    layer = cls(k, s, p, dtype=np.float64)
    dy = rng.standard_normal(layer.forward(x).shape)
    y, dx = run(layer, x, dy)
    ty, tdx = torch_pool(kind, x, dy, k, s, p)
    assert y.shape == ty.shape
    assert rel_err(y, ty) <= TOL
    assert rel_err(dx, tdx) <= TOL


@pytest.mark.parametrize("fill", ["constant", "few_values", "negative_constant"])
@pytest.mark.parametrize("k, s, p, shape", CASES, ids=IDS)
def test_maxpool_ties_route_the_gradient_like_torch(fill, k, s, p, shape, rng):
    if fill == "constant":
        x = np.ones(shape)
    elif fill == "negative_constant":        # the -inf padding must still lose
        x = np.full(shape, -3.0)
    else:
        x = rng.integers(0, 3, size=shape).astype(np.float64)
    layer = MaxPool2d(k, s, p, dtype=np.float64)
    dy = rng.standard_normal(layer.forward(x).shape)
    y, dx = run(layer, x, dy)
    ty, tdx = torch_pool("max", x, dy, k, s, p)
    np.testing.assert_array_equal(y, ty)
    np.testing.assert_allclose(dx, tdx, rtol=0, atol=1e-14)


def test_maxpool_tie_goes_to_first_element_in_row_major_order():
    layer = MaxPool2d(2, dtype=np.float64)
    layer.forward(np.ones((1, 1, 2, 2)))
    np.testing.assert_array_equal(layer.backward(np.ones((1, 1, 1, 1)))[0, 0], [[1, 0], [0, 0]])


@pytest.mark.parametrize("cls", [MaxPool2d, AvgPool2d])
def test_pool_float32_stays_float32(cls, rng):
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    layer = cls(3, 2, 1)
    y = layer.forward(x)
    assert y.dtype == np.float32
    assert layer.backward(np.ones_like(y)).dtype == np.float32


@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (1, 2, 3, 5), (2, 1, 1, 1), (1, 4, 7, 7)])
@pytest.mark.parametrize("output_size", [1, (1, 1)])
def test_adaptive_avgpool_matches_torch_and_fd(shape, output_size, rng):
    x = rng.standard_normal(shape)
    dy = rng.standard_normal(shape[:2] + (1, 1))
    layer = AdaptiveAvgPool2d(output_size, dtype=np.float64)
    y, dx = run(layer, x, dy)
    tx = t64(x, grad=True)
    ty = F.adaptive_avg_pool2d(tx, output_size)
    ty.backward(t64(dy))
    assert rel_err(y, ty.detach().numpy()) <= TOL
    assert rel_err(dx, tx.grad.numpy()) <= TOL
    assert_fd(layer, x, rng)


@pytest.mark.parametrize("output_size", [2, (2, 2), (1, 2), None, (1, 1, 1)])
def test_adaptive_avgpool_only_does_global_pooling(output_size):
    with pytest.raises(ValueError, match="AdaptiveAvgPool2d.*output_size"):
        AdaptiveAvgPool2d(output_size)


@pytest.mark.parametrize("cls", [MaxPool2d, AvgPool2d])
def test_pool_constructor_checks(cls):
    with pytest.raises(ValueError, match="at most half"):
        cls(2, 2, 2)
    with pytest.raises(ValueError, match=cls.__name__):
        cls(0)
    with pytest.raises(TypeError, match="kernel_size"):
        cls(2.5)
    assert cls(3).stride == (3, 3)


@pytest.mark.parametrize("cls", [MaxPool2d, AvgPool2d, AdaptiveAvgPool2d])
@pytest.mark.parametrize("x, error", [
    (np.zeros((3, 4, 4), np.float32), ValueError),            # no batch axis
    (np.zeros((2, 3, 4, 4), np.int32), TypeError),
    (np.zeros((2, 3, 4, 4), np.float64), TypeError),
    (np.full((1, 1, 4, 4), np.nan, np.float32), FloatingPointError),
])
def test_pool_rejects_bad_input_naming_the_layer(cls, x, error):
    layer = as_child(cls(1) if cls is AdaptiveAvgPool2d else cls(2), "pool1")
    with pytest.raises(error, match=rf"pool1 \({cls.__name__}\)"):
        layer.forward(x)


@pytest.mark.parametrize("cls", [MaxPool2d, AvgPool2d])
def test_pool_rejects_input_smaller_than_the_kernel(cls):
    layer = as_child(cls(5, padding=1), "pool1")
    with pytest.raises(ValueError, match=rf"pool1 \({cls.__name__}\).*smaller than the kernel"):
        layer.forward(np.zeros((1, 1, 2, 2), np.float32))
