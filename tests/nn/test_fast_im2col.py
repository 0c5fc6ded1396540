"""The transposed im2col layout the engine's Conv2d runs on (dfbst_np.nn.fast_im2col).

Checked against torch's unfold/fold in float64 and against the plain NumPy
transposes they replace (bit for bit), also with the blocked transpose forced
on small arrays.
"""
import numpy as np
import pytest

import dfbst_np.nn.transpose as transpose
from dfbst_np.nn.im2col import conv_output_size
from dfbst_np.nn.fast_im2col import col2im_t, from_output, im2col_t, to_output
from tests.helpers import rel_err
from tests.nn.parity import TOL, t64, torch

F = torch.nn.functional

# (input shape, kernel, stride, padding)
CASES = [
    ((2, 3, 8, 8), 3, 1, 0),
    ((1, 1, 28, 28), 5, 1, 0),          # LeNet-5's conv1, batch of 1
    ((3, 20, 12, 12), 5, 1, 0),         # LeNet-5's conv2
    ((2, 2, 7, 9), 3, 2, 1),            # stride and padding, odd sizes
    ((5, 2, 6, 5), 2, 1, 1),
]
IDS = [f"{'x'.join(map(str, s))}-k{k}-s{st}-p{p}" for s, k, st, p in CASES]


@pytest.fixture(params=[False, True], ids=["default", "small_blocks"])
def blocked(request, monkeypatch):
    """Run each test as is and with 1-byte blocks: every tall transpose then goes
    in blocks of 16 rows (the minimum), most with a remainder."""
    if request.param:
        monkeypatch.setattr(transpose, "BLOCK_BYTES", 1)
    return request.param


def _positions(n, oh, ow, batch_last):
    """torch's (n, a, b) column order -> this layout's order."""
    idx = np.arange(n * oh * ow).reshape(n, oh, ow)
    return (idx.transpose(1, 2, 0) if batch_last else idx).ravel()


@pytest.mark.parametrize("batch_last", [False, True], ids=["nab", "abn"])
@pytest.mark.parametrize("shape, k, s, p", CASES, ids=IDS)
def test_im2col_col2im_match_torch_unfold_fold(shape, k, s, p, batch_last, blocked, rng):
    n, c, h, w = shape
    oh, ow = conv_output_size(h, k, s, p), conv_output_size(w, k, s, p)
    x = rng.standard_normal(shape)
    cols = im2col_t(x, k, k, s, p, batch_last)
    ref = F.unfold(t64(x), k, padding=p, stride=s).numpy()            # (N, C*k*k, L)
    ref = ref.transpose(1, 0, 2).reshape(c * k * k, -1)[:, _positions(n, oh, ow, batch_last)]
    assert cols.shape == ref.shape and cols.flags.c_contiguous
    assert rel_err(cols, ref) <= TOL
    g = rng.standard_normal(cols.shape)
    dx = col2im_t(g, shape, k, k, s, p, batch_last)
    back = np.empty_like(g)
    back[:, _positions(n, oh, ow, batch_last)] = g
    tref = F.fold(t64(back.reshape(c * k * k, n, -1).transpose(1, 0, 2)), (h, w), k,
                  padding=p, stride=s).numpy()
    assert dx.shape == shape and dx.flags.c_contiguous
    assert rel_err(dx, tref) <= TOL


def _old_to_output(y2t, n, oh, ow, batch_last):
    if batch_last:
        return np.ascontiguousarray(y2t.reshape(-1, oh, ow, n).transpose(3, 0, 1, 2))
    return np.ascontiguousarray(y2t.reshape(-1, n, oh, ow).transpose(1, 0, 2, 3))


def _old_from_output(dy, batch_last):
    order = (1, 2, 3, 0) if batch_last else (1, 0, 2, 3)
    return np.ascontiguousarray(dy.transpose(order)).reshape(dy.shape[1], -1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch_last", [False, True], ids=["nab", "abn"])
@pytest.mark.parametrize("n, out, oh, ow", [(1, 4, 3, 3), (7, 5, 4, 2), (64, 50, 8, 8)])
def test_to_and_from_output_are_the_plain_transposes(n, out, oh, ow, batch_last, dtype,
                                                     blocked, rng):
    y2t = rng.standard_normal((out, n * oh * ow)).astype(dtype)
    y = to_output(y2t, n, oh, ow, batch_last)
    assert y.shape == (n, out, oh, ow) and y.flags.c_contiguous and y.dtype == dtype
    np.testing.assert_array_equal(y, _old_to_output(y2t, n, oh, ow, batch_last))
    dy2t = from_output(y, batch_last)
    assert dy2t.flags.c_contiguous
    np.testing.assert_array_equal(dy2t, _old_from_output(y, batch_last))
    np.testing.assert_array_equal(dy2t, y2t)                             # round trip
