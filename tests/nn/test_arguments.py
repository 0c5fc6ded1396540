"""Bad constructor arguments fail at construction, naming the class and the argument;
a NaN or inf upstream gradient fails in backward, naming the layer (issue 12)."""
import numpy as np
import pytest

from dfbst_np.models import build
from dfbst_np.nn import BatchNorm2d, Conv2d, Linear, ReLU
from dfbst_np.nn.pooling import AvgPool2d, MaxPool2d
from dfbst_np.sparse.masked import MaskedConv2d, MaskedLinear


@pytest.mark.parametrize("make, words", [
    (lambda: Linear(0, 3), "Linear: in_features must be > 0, got 0"),
    (lambda: Linear(4, -3), "Linear: out_features must be > 0, got -3"),
    (lambda: MaskedLinear(-3, 3), "MaskedLinear: in_features must be > 0"),
    (lambda: Conv2d(0, 2, 3), "Conv2d: in_channels must be > 0"),
    (lambda: MaskedConv2d(1, 0, 3), "MaskedConv2d: out_channels must be > 0"),
    (lambda: Conv2d(1, 2, 0), "Conv2d: kernel_size must be > 0"),
    (lambda: Conv2d(1, 2, (3, 0)), "Conv2d: kernel_size must be > 0, got (3, 0)"),
    (lambda: Conv2d(1, 2, 3, stride=0), "Conv2d: stride must be > 0"),
    (lambda: MaskedConv2d(1, 2, 3, padding=-1), "MaskedConv2d: padding must be >= 0"),
    (lambda: BatchNorm2d(0), "BatchNorm2d: num_features must be > 0"),
    (lambda: MaxPool2d(0), "MaxPool2d: kernel_size must be > 0"),
    (lambda: AvgPool2d(2, stride=0), "AvgPool2d: stride must be > 0"),
    (lambda: build("lenet_5", num_classes=0), "num_classes must be a positive integer"),
    (lambda: MaskedLinear(4, 3, kernel_path="fast"), "MaskedLinear: kernel_path must be one of"),
])
def test_bad_constructor_arguments_fail_at_construction(make, words):
    with pytest.raises(ValueError) as info:
        make()
    assert words in str(info.value)


def test_non_integer_sizes_are_refused():
    with pytest.raises(TypeError, match="Linear: in_features must be an integer, got 2.5"):
        Linear(2.5, 3)
    Conv2d(1, 2, 3, padding=0)          # zero padding is valid


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("make, shape", [
    (lambda: Linear(4, 3, dtype=np.float64, rng=0), (2, 4)),
    (lambda: MaskedLinear(4, 3, dtype=np.float64, rng=0), (2, 4)),
    (lambda: Conv2d(1, 2, 3, dtype=np.float64, rng=0), (2, 1, 5, 5)),
    (lambda: ReLU(), (2, 4)),
])
def test_non_finite_upstream_gradient_names_the_layer(make, shape, bad):
    layer = make()
    x = np.random.default_rng(0).standard_normal(shape)
    x = x.astype(getattr(layer, "dtype", np.float64))
    y = layer.forward(x)
    dy = np.ones_like(y)
    dy.flat[dy.size // 2] = bad
    with pytest.raises(FloatingPointError) as info:
        layer.backward(dy)
    assert type(layer).__name__ in str(info.value) and "upstream gradient" in str(info.value)
