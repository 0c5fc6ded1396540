"""The existing engine layers, Linear and Conv2d, and im2col/col2im."""
import numpy as np
import pytest

from dfbst_np.nn import Conv2d, Linear
from dfbst_np.nn.im2col import col2im, im2col
from tests.helpers import rel_err
from tests.nn.fd import as_child, assert_fd, numerical_grad
from tests.nn.parity import TOL, load_into_torch, t64, torch, torch_param_grads

F = torch.nn.functional

LINEAR = [(1, 4, 3, True), (5, 7, 2, True), (3, 6, 5, False)]   # (N, in, out, bias)
# (N, C_in, C_out, kernel, stride, padding, H, W, bias)
CONV = [
    (2, 3, 4, 3, 1, 0, 5, 5, True),
    (1, 2, 3, 3, 2, 1, 7, 7, False),        # stride 2, padding 1, batch of 1, odd size
    (2, 1, 2, 5, 1, 0, 8, 9, True),         # LeNet-5's kernel, non-square input
    (1, 3, 2, (2, 3), 2, 1, 6, 5, True),    # non-square kernel
    (2, 4, 3, 1, 2, 0, 5, 5, False),        # ResNet's 1x1 stride-2 downsample
]
CONV_IDS = [f"N{c[0]}-k{c[3]}-s{c[4]}-p{c[5]}-{c[6]}x{c[7]}" for c in CONV]


def make_conv(n, cin, cout, k, s, p, h, w, bias):
    return Conv2d(cin, cout, k, stride=s, padding=p, bias=bias, dtype=np.float64, rng=1)


# -- finite differences -----------------------------------------------------------------
@pytest.mark.parametrize("n, fin, fout, bias", LINEAR)
def test_linear_matches_finite_differences(n, fin, fout, bias, rng):
    assert_fd(Linear(fin, fout, bias=bias, dtype=np.float64, rng=1), rng.standard_normal((n, fin)), rng)


@pytest.mark.parametrize("case", CONV, ids=CONV_IDS)
def test_conv_matches_finite_differences(case, rng):
    n, cin, *_, h, w, _ = case
    assert_fd(make_conv(*case), rng.standard_normal((n, cin, h, w)), rng)


# -- PyTorch parity ---------------------------------------------------------------------
def check_against_torch(layer, tlayer, x, rng):
    load_into_torch(tlayer, layer)
    y = layer.forward(x)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    tx = t64(x, grad=True)
    ty = tlayer(tx)
    ty.backward(t64(dy))
    assert y.shape == tuple(ty.shape)
    assert rel_err(y, ty.detach().numpy()) <= TOL
    assert rel_err(dx, tx.grad.numpy()) <= TOL
    tgrads = torch_param_grads(tlayer)
    assert set(layer.grads) == set(tgrads)
    for k in tgrads:
        assert rel_err(layer.grads[k], tgrads[k]) <= TOL, k


@pytest.mark.parametrize("n, fin, fout, bias", LINEAR)
def test_linear_matches_torch(n, fin, fout, bias, rng):
    layer = Linear(fin, fout, bias=bias, dtype=np.float64, rng=1)
    check_against_torch(layer, torch.nn.Linear(fin, fout, bias=bias), rng.standard_normal((n, fin)), rng)


@pytest.mark.parametrize("case", CONV, ids=CONV_IDS)
def test_conv_matches_torch(case, rng):
    n, cin, cout, k, s, p, h, w, bias = case
    tconv = torch.nn.Conv2d(cin, cout, k, stride=s, padding=p, bias=bias)
    check_against_torch(make_conv(*case), tconv, rng.standard_normal((n, cin, h, w)), rng)


def test_state_dict_layout_matches_torch():
    for ours, theirs in [(Linear(4, 3), torch.nn.Linear(4, 3)),
                         (Conv2d(2, 5, 3, bias=False), torch.nn.Conv2d(2, 5, 3, bias=False))]:
        sd, tsd = ours.state_dict(), theirs.state_dict()
        assert list(sd) == list(tsd)
        assert [v.shape for v in sd.values()] == [tuple(v.shape) for v in tsd.values()]


# -- im2col / col2im --------------------------------------------------------------------
@pytest.mark.parametrize("case", CONV, ids=CONV_IDS)
def test_im2col_and_col2im_match_unfold_and_fold(case, rng):
    n, c, _, k, s, p, h, w, _ = case
    kh, kw = (k, k) if np.isscalar(k) else k
    x = rng.standard_normal((n, c, h, w))
    cols = im2col(x, kh, kw, s, p)
    tcols = F.unfold(t64(x), (kh, kw), stride=s, padding=p)            # (N, C*kh*kw, L)
    assert rel_err(cols, tcols.transpose(1, 2).reshape(cols.shape).numpy()) <= TOL
    r = rng.standard_normal(cols.shape)
    folded = col2im(r, x.shape, kh, kw, s, p)
    tr = t64(r).reshape(n, -1, c * kh * kw).transpose(1, 2)
    assert rel_err(folded, F.fold(tr, (h, w), (kh, kw), stride=s, padding=p).numpy()) <= TOL
    # col2im is the adjoint of im2col: <im2col(x), r> = <x, col2im(r)>, and so its gradient.
    assert abs(np.sum(cols * r) - np.sum(x * folded)) <= 1e-12 * np.abs(cols * r).sum()
    numeric = numerical_grad(lambda: float(np.sum(im2col(x, kh, kw, s, p) * r)), x)
    assert rel_err(folded, numeric) <= 1e-7


# -- bad input --------------------------------------------------------------------------
@pytest.mark.parametrize("x, error, fragment", [
    (np.zeros((2, 4, 1), np.float32), ValueError, "rank 2"),
    (np.zeros(4, np.float32), ValueError, "rank 2"),
    (np.zeros((2, 5), np.float32), ValueError, "size 4 on axis 1"),
    (np.zeros((2, 4), np.int64), TypeError, "dtype float32"),
    (np.zeros((2, 4), np.float64), TypeError, "dtype float32"),
    (np.full((2, 4), np.nan, np.float32), FloatingPointError, "NaN"),
    (np.zeros((0, 4), np.float32), ValueError, "empty batch"),
])
def test_linear_rejects_bad_input_naming_the_layer(x, error, fragment):
    layer = as_child(Linear(4, 3), "fc1")
    with pytest.raises(error, match=r"fc1 \(Linear\)") as info:
        layer.forward(x)
    assert fragment in str(info.value)


@pytest.mark.parametrize("x, error, fragment", [
    (np.zeros((2, 3, 5), np.float32), ValueError, "rank 4"),
    (np.zeros((2, 2, 5, 5), np.float32), ValueError, "size 3 on axis 1"),
    (np.zeros((2, 3, 5, 5), np.int32), TypeError, "dtype float32"),
    (np.full((1, 3, 5, 5), np.inf, np.float32), FloatingPointError, "inf"),
    (np.zeros((1, 3, 2, 2), np.float32), ValueError, "smaller than the kernel"),
])
def test_conv_rejects_bad_input_naming_the_layer(x, error, fragment):
    layer = as_child(Conv2d(3, 4, 3), "conv1")
    with pytest.raises(error, match=r"conv1 \(Conv2d\)") as info:
        layer.forward(x)
    assert fragment in str(info.value)


@pytest.mark.parametrize("layer, x", [(Linear(4, 3), np.zeros((2, 4), np.float32)),
                                      (Conv2d(3, 4, 3), np.zeros((1, 3, 5, 5), np.float32))],
                         ids=["Linear", "Conv2d"])
def test_backward_rejects_gradient_of_wrong_shape(layer, x):
    y = as_child(layer, "w1").forward(x)
    with pytest.raises(ValueError, match=rf"w1 \({type(layer).__name__}\): backward expected"):
        layer.backward(np.zeros(y.shape[:-1] + (y.shape[-1] + 1,), np.float32))
