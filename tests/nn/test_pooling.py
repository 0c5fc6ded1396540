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


# --- the tiled fast path (kernel == stride, no padding, H and W divisible) ---

# (kernel_size, input shape): all tile exactly
TILED = [
    (2, (2, 3, 4, 4)),            # LeNet's pool
    (2, (1, 1, 2, 2)),            # batch of 1, one window
    (2, (1, 4, 6, 10)),           # batch of 1, non-square
    (3, (2, 2, 6, 9)),
    ((2, 3), (3, 2, 4, 9)),       # rectangular kernel
    ((1, 2), (2, 2, 3, 4)),
    (1, (2, 3, 3, 3)),            # 1x1: a copy
]
TILED_IDS = [f"k{k}-{'x'.join(map(str, shape))}" for k, shape in TILED]


def _general(layer):
    """The same layer forced onto the general path."""
    layer._tiles = lambda x: False
    return layer


def _tie_input(fill, shape, rng):
    if fill == "random":
        return rng.standard_normal(shape)
    if fill == "constant":
        return np.ones(shape)
    if fill == "zeros":                              # ReLU output: all-zero windows
        return np.zeros(shape)
    if fill == "relu":
        return np.maximum(rng.standard_normal(shape), 0)
    return rng.integers(0, 3, size=shape).astype(np.float64)   # few_values


FILLS = ["random", "constant", "zeros", "relu", "few_values"]


@pytest.mark.parametrize("k, s, p, shape, tiled", [
    (2, None, 0, (2, 3, 4, 4), True),
    (2, 2, 0, (1, 1, 2, 2), True),
    (2, None, 0, (1, 1, 5, 4), False),           # odd height: floor mode drops a row
    (2, None, 0, (1, 1, 4, 5), False),           # odd width
    (3, 3, 0, (1, 1, 7, 8), False),
    (2, 2, 1, (1, 1, 4, 4), False),              # padding
    (3, 2, 1, (2, 2, 7, 7), False),              # overlapping
    (2, 1, 0, (1, 1, 4, 4), False),              # stride != kernel
])
def test_maxpool_takes_the_tiled_path_only_when_windows_tile(k, s, p, shape, tiled, rng):
    layer = MaxPool2d(k, s, p, dtype=np.float64)
    layer.forward(rng.standard_normal(shape))
    assert layer._cache.tiled is tiled


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fill", FILLS)
@pytest.mark.parametrize("k, shape", TILED, ids=TILED_IDS)
def test_maxpool_tiled_path_is_bitwise_the_general_path(k, shape, fill, dtype, rng):
    x = _tie_input(fill, shape, rng).astype(dtype)
    fast, general = MaxPool2d(k, dtype=dtype), _general(MaxPool2d(k, dtype=dtype))
    y = fast.forward(x)
    assert fast._cache.tiled
    yg = general.forward(x)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dy.flat[::5] = -0.0                          # -0.0 must come out as the general path's
    dy.flat[1::5] = 0.0
    dx, dxg = fast.backward(dy), general.backward(dy)
    assert y.dtype == dx.dtype == dtype and dx.flags.c_contiguous
    itype = np.int32 if dtype == np.float32 else np.int64
    np.testing.assert_array_equal(y.view(itype), yg.view(itype))
    np.testing.assert_array_equal(dx.view(itype), dxg.view(itype))   # signs of zeros too


@pytest.mark.parametrize("fill", FILLS)
@pytest.mark.parametrize("k, shape", TILED, ids=TILED_IDS)
def test_maxpool_tiled_path_matches_torch_including_ties(k, shape, fill, rng):
    x = _tie_input(fill, shape, rng)
    layer = MaxPool2d(k, dtype=np.float64)
    dy = rng.standard_normal(layer.forward(x).shape)
    assert layer._cache.tiled
    dx = layer.backward(dy)
    ty, tdx = torch_pool("max", x, dy, k, k, 0)
    assert rel_err(layer.forward(x), ty) <= TOL
    assert rel_err(dx, tdx) <= TOL
    np.testing.assert_allclose(dx, tdx, rtol=0, atol=1e-14)


def test_maxpool_tiled_ties_go_to_the_first_element_in_row_major_order():
    layer = MaxPool2d(2, dtype=np.float64)
    # windows: all equal; max at (0,1) and (1,0); max at (1,0) and (1,1); only (1,1)
    x = np.array([[[[1, 1, 0, 5, 0, 0, 0, 0],
                    [1, 1, 5, 0, 3, 3, 0, 2]]]], dtype=np.float64)
    layer.forward(x)
    dx = layer.backward(np.array([[[[1.0, 2.0, 3.0, 4.0]]]]))
    np.testing.assert_array_equal(dx[0, 0], [[1, 0, 0, 2, 0, 0, 0, 0],
                                             [0, 0, 0, 0, 3, 0, 0, 4]])


def test_maxpool_tiled_backward_in_blocks_of_samples(monkeypatch, rng):
    """Blocks of samples (here one or three per block, with a remainder) give the same bits."""
    import dfbst_np.nn.pooling as pooling
    x = np.maximum(rng.standard_normal((7, 3, 6, 6)), 0).astype(np.float32)
    dy = rng.standard_normal((7, 3, 3, 3)).astype(np.float32)
    general = _general(MaxPool2d(2))
    general.forward(x)
    ref = general.backward(dy)
    for nbytes in (1, 3 * x[0].nbytes):
        monkeypatch.setattr(pooling, "TILED_BLOCK_BYTES", nbytes)
        layer = MaxPool2d(2)
        layer.forward(x)
        np.testing.assert_array_equal(layer.backward(dy).view(np.int32), ref.view(np.int32))


def test_maxpool_tiled_path_takes_a_non_contiguous_input(rng):
    x = rng.standard_normal((4, 4, 3, 2)).transpose(3, 2, 0, 1)     # (2, 3, 4, 4), not contiguous
    layer, general = MaxPool2d(2, dtype=np.float64), _general(MaxPool2d(2, dtype=np.float64))
    y, yg = layer.forward(x), general.forward(x)
    assert layer._cache.tiled
    dy = rng.standard_normal(y.shape)
    np.testing.assert_array_equal(y, yg)
    np.testing.assert_array_equal(layer.backward(dy), general.backward(dy))
