"""MaskedLinear / MaskedConv2d of dfbst_np against the PyTorch reference layers.

What is proven: for every method (dense, dst, dfbst), linear and convolutional
layers of several shapes (LeNet-sized, stride 2, padding, no bias, a batch of
1, odd sizes) and forward-mask densities of 100 %, ~50 %, ~5 % and < 1 %, one
forward and one backward in float64 give the same y, dL/dx and gradients of
weight, bias and threshold as autograd through the reference layer, the same
mask M bit for bit, and no gradient for u (dthreshold) on either side. The
loss is sum(y * R) for a random R, so dL/dy = R is a generic cotangent.

How the cases are built:

* W is the layer's own initial weight, each row scaled by a factor from 1 to
  30, so that |W| - tau visits all three branches of the estimator h
  (|x| <= 0.4, 0.4 < |x| <= 1, |x| > 1); the same numbers are copied into
  the reference through the state dict.
* The thresholds of each row are quantiles of that row's |W|, so the density
  is reached row by row. dfbst rows get random signs (|t| is what masks, and
  s(t) = -1 on negative rows); the 100 % dst case uses negative thresholds.
* < 1 %: row 0 keeps its largest weight, every other row none, so the first
  mask keeps 1 / numel < 1 % (every layer here has more than 100 weights).
  The reset must then fire on both sides: t becomes 0 and M all ones.

Tolerances:

* ``float32_masks=False`` on both sides: both compute the same float64
  arithmetic in different summation orders; 1e-10 relative (the issue's
  bound) holds with a wide margin (measured <= 2.5e-15).
* ``float32_masks=True`` on both sides (the reference's float32 masks; the
  NumPy side rounds A * W to float32 where autograd does): the two float64
  values of A * W differ in the last bits, and an entry that sits on a
  float32 rounding boundary can round to neighbouring float32 values on the
  two sides (see tests/reference/test_parity_numpy.py). For the LeNet-sized
  layers below no entry flips and agreement is at float64 rounding
  (measured <= 2.4e-15), so the same 1e-10 is asserted. The rounding itself
  is real: with float64 masks the threshold gradient moves by 1e-8 to 6e-8
  relative (measured), and the test checks that it moves by more than 1e-9.
"""
import copy

import numpy as np
import pytest
import torch

from dfbst_np.reference import layers as ref_layers
from dfbst_np.reference.convert import to_torch_state_dict
from dfbst_np.sparse.masked import MaskedConv2d, MaskedLinear
from tests.helpers import rel_err

TOL = 1e-10

# name -> (kind, constructor kwargs, input shape)
SHAPES = {
    "linear_odd": ("linear", dict(in_features=131, out_features=29), (6, 131)),
    "linear_batch1_odd": ("linear", dict(in_features=37, out_features=11), (1, 37)),
    "linear_no_bias": ("linear", dict(in_features=50, out_features=7, bias=False), (4, 50)),
    "conv_lenet_conv1": ("conv", dict(in_channels=1, out_channels=20, kernel_size=5), (2, 1, 28, 28)),
    "conv_stride2_pad1_odd": ("conv", dict(in_channels=3, out_channels=8, kernel_size=3, stride=2,
                                           padding=1), (3, 3, 9, 11)),
    "conv_no_bias_pad1": ("conv", dict(in_channels=4, out_channels=6, kernel_size=3, padding=1,
                                       bias=False), (2, 4, 7, 7)),
    "conv_batch1_stride2": ("conv", dict(in_channels=3, out_channels=5, kernel_size=3, stride=2),
                            (1, 3, 8, 9)),
}
DENSITIES = ("100%", "50%", "5%", "<1%")

# LeNet-sized layers, for float32_masks=True (name -> (kind, kwargs, input shape))
LENET_LAYERS = {
    "fc1": ("linear", dict(in_features=784, out_features=300), (8, 784)),
    "lenet5_fc3": ("linear", dict(in_features=800, out_features=500), (8, 800)),
    "lenet5_conv1": ("conv", dict(in_channels=1, out_channels=20, kernel_size=5), (4, 1, 28, 28)),
    "lenet5_conv2": ("conv", dict(in_channels=20, out_channels=50, kernel_size=5), (4, 20, 12, 12)),
    "lenet5_fc4": ("linear", dict(in_features=500, out_features=10), (8, 500)),
}

def build_pair(kind, kw, method, float32_masks, seed):
    """The NumPy layer and the reference layer with the same float64 state."""
    rng = np.random.default_rng(seed)
    if kind == "linear":
        layer = MaskedLinear(method=method, dtype=np.float64, rng=rng,
                             float32_masks=float32_masks, **kw)
        ref = ref_layers.MaskedLinear(method=method, float32_masks=float32_masks, **kw)
    else:
        layer = MaskedConv2d(method=method, dtype=np.float64, rng=rng,
                             float32_masks=float32_masks, **kw)
        ref = ref_layers.MaskedConv2d(method=method, float32_masks=float32_masks, **kw)
    w = layer.params["weight"]
    w *= np.geomspace(1.0, 30.0, w.shape[0]).reshape((-1,) + (1,) * (w.ndim - 1))
    return layer, ref.to(torch.float64), rng


def set_thresholds(layer, density, method, rng):
    """Per-row thresholds that give ``density`` (see the module docstring)."""
    a = np.sort(np.abs(layer.weight2d), axis=1)
    out, fan_in = a.shape
    if density == "100%":
        t = np.full(out, -0.1) if method == "dst" else np.zeros(out)
    elif density == "<1%":
        assert out * fan_in > 100
        t = a[:, -1].copy()          # H(|W| - max|W|) = 0: the row keeps nothing
        t[0] = a[0, -2]              # row 0 keeps exactly its largest weight
    else:
        keep = {"50%": 0.5, "5%": 0.05}[density]
        t = np.quantile(a, 1.0 - keep, axis=1)
    if method == "dfbst":
        t = t * rng.choice([-1.0, 1.0], size=out)
    layer.params["threshold"][...] = t


def run_pair(layer, ref, x_shape, rng):
    """One forward and backward of sum(y * R) on both sides."""
    x = rng.standard_normal(x_shape)
    y = layer.forward(x)
    R = rng.standard_normal(y.shape)
    dx = layer.backward(R)
    xt = torch.tensor(x, requires_grad=True)
    yt = ref(xt)
    (yt * torch.from_numpy(R)).sum().backward()
    return y, dx, yt.detach().numpy(), xt.grad.numpy()


def check_against_reference(layer, ref, x_shape, rng, tol):
    y, dx, yt, dxt = run_pair(layer, ref, x_shape, rng)
    errs = {"y": rel_err(y, yt), "dx": rel_err(dx, dxt)}
    for name, p in ref.named_parameters():
        if name == "dthreshold":
            # u gets its gradient from beta * V only, never from the loss
            assert p.grad is None and "dthreshold" not in layer.grads
            continue
        assert p.grad is not None and name in layer.grads, name
        errs[name] = rel_err(layer.grads[name], p.grad.numpy())
    assert set(layer.grads) == {n for n, p in ref.named_parameters() if p.grad is not None}
    if layer.method != "dense":
        np.testing.assert_array_equal(layer.mask, ref.mask.numpy())
    assert max(errs.values()) <= tol, errs
    return errs


@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("method", ["dst", "dfbst"])
def test_masked_layer_matches_reference(method, shape, density):
    kind, kw, x_shape = SHAPES[shape]
    layer, ref, rng = build_pair(kind, kw, method, False, seed=11)
    set_thresholds(layer, density, method, rng)
    t0 = layer.params["threshold"].copy()
    ref.load_state_dict(to_torch_state_dict(layer.state_dict(), like=ref))
    if method == "dfbst" and density != "100%":
        assert (t0 < 0).any() and (t0 > 0).any()     # negative thresholds included
    check_against_reference(layer, ref, x_shape, rng, TOL)

    t_np, t_ref = layer.params["threshold"], ref.threshold.detach().numpy()
    density_used = layer.mask.mean()
    if density == "<1%":
        # the reset fired on both sides: t zeroed, and M keeps every nonzero weight
        assert layer.state.fmask.reset
        assert np.all(t_np == 0) and np.all(t_ref == 0)
        assert density_used == 1.0
    else:
        assert not layer.state.fmask.reset
        np.testing.assert_array_equal(t_np, t0)
        np.testing.assert_array_equal(t_ref, t0)
        target = {"100%": 1.0, "50%": 0.5, "5%": 0.05}[density]
        assert abs(density_used - target) <= 0.5 * target + 1.0 / layer.weight2d.shape[1]


@pytest.mark.parametrize("shape", list(SHAPES))
def test_dense_layer_matches_reference(shape):
    kind, kw, x_shape = SHAPES[shape]
    layer, ref, rng = build_pair(kind, kw, "dense", False, seed=12)
    ref.load_state_dict(to_torch_state_dict(layer.state_dict(), like=ref))
    assert "threshold" not in layer.params and layer.mask is None
    check_against_reference(layer, ref, x_shape, rng, TOL)


@pytest.mark.parametrize("density", ["50%", "<1%"])
@pytest.mark.parametrize("name", list(LENET_LAYERS))
@pytest.mark.parametrize("method", ["dst", "dfbst"])
def test_float32_masks_on_lenet_layers(method, name, density):
    kind, kw, x_shape = LENET_LAYERS[name]
    layer, ref, rng = build_pair(kind, kw, method, True, seed=13)
    set_thresholds(layer, density, method, rng)
    ref.load_state_dict(to_torch_state_dict(layer.state_dict(), like=ref))
    assert ref.float32_masks and layer.float32_masks
    state, rng_exact = layer.state_dict(), copy.deepcopy(rng)
    check_against_reference(layer, ref, x_shape, rng, TOL)
    assert ref.mask.dtype == torch.float32          # the reference's .float() mask
    if density == "<1%":
        assert np.all(layer.params["threshold"] == 0) and np.all(ref.threshold.detach().numpy() == 0)

    # the same layer, inputs and cotangent with float64 masks: dt differs
    exact, _, _ = build_pair(kind, kw, method, False, seed=13)
    exact.load_state_dict(state)
    y = exact.forward(rng_exact.standard_normal(x_shape))
    exact.backward(rng_exact.standard_normal(y.shape))
    assert rel_err(exact.grads["threshold"], layer.grads["threshold"]) > 10 * TOL
