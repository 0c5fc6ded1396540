"""The fast topology updates (sparse/topology.py) equal the textbook's (float64 and float32).

On every distinct masked-weight shape of the four architectures (linear and
conv, taken from the built models), with weights and gradients rounded to a
coarse grid so that many entries tie: identical masks, identical weights
(nothing is computed, only moved, so equality is exact), the same random
draws, and the changed entries reported for the momentum.
"""
import numpy as np
import pytest

from dfbst_np import models, textbook as tb
from dfbst_np.sparse import topology as tp
from dfbst_np.sparse.masked import masked_layers


def all_shapes():
    shapes = []
    for name in ("lenet300_100", "lenet_5", "vgg16", "resnet18"):
        model = models.build(name, method="dense", num_classes=10)
        for _, layer in masked_layers(model):
            shape = tuple(layer.params["weight"].shape)
            if shape not in shapes:
                shapes.append(shape)
    return shapes


SHAPES = all_shapes()


def layer(shape, density, dtype, seed):
    rng = np.random.default_rng(seed)
    M = tb.random_mask(shape, density, rng, dtype=dtype)
    W = (np.round(rng.standard_normal(shape) * 8) / 8).astype(dtype) * M    # many ties
    grad = (np.round(rng.standard_normal(shape) * 4) / 4).astype(dtype)
    return W, M, grad


def changes(M_old, M_new):
    gone = np.flatnonzero((M_old != 0) & (M_new == 0))
    new = np.flatnonzero((M_old == 0) & (M_new != 0))
    return gone, new


def test_shapes_cover_linear_and_conv_of_four_architectures():
    assert (300, 784) in SHAPES and (20, 1, 5, 5) in SHAPES and (512, 512, 3, 3) in SHAPES
    assert (128, 64, 1, 1) in SHAPES and len(SHAPES) >= 20


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_fast_equals_textbook(shape):
    dtype = np.float32 if len(shape) == 4 and shape[0] == 512 else np.float64
    W, M, grad = layer(shape, 0.1, dtype, seed=sum(shape))

    # GMP: prune an already sparse layer further
    Wf, Mf = W.copy(), M.copy()
    pruned = tp.prune_to_density(Wf, Mf, 0.05)
    M_tb = tb.magnitude_mask(W, 0.05)
    np.testing.assert_array_equal(Mf, M_tb)
    np.testing.assert_array_equal(Wf, W * M_tb)
    np.testing.assert_array_equal(pruned, changes(M, M_tb)[0])

    # SET: same seed, same draws
    init = lambda rng, n: rng.uniform(-0.1, 0.1, n)
    W_tb, M_tb = tb.set_update(W, M, 0.3, np.random.default_rng(1), init)
    Wf, Mf = W.copy(), M.copy()
    buffers = (Wf.ctypes.data, Mf.ctypes.data)
    gone, new = tp.set_update_(Wf, Mf, 0.3, np.random.default_rng(1), init)
    assert (Wf.ctypes.data, Mf.ctypes.data) == buffers                  # in place
    np.testing.assert_array_equal(Mf, M_tb)
    np.testing.assert_array_equal(Wf, W_tb)
    for got, want in zip((gone, new), changes(M, M_tb)):
        np.testing.assert_array_equal(np.sort(got), want)
    assert Mf.sum() == M.sum() and Wf.dtype == dtype

    # RigL
    W_tb, M_tb = tb.rigl_update(W, M, grad, 0.3)
    Wf, Mf = W.copy(), M.copy()
    gone, new = tp.rigl_update_(Wf, Mf, grad, 0.3)
    np.testing.assert_array_equal(Mf, M_tb)
    np.testing.assert_array_equal(Wf, W_tb)
    for got, want in zip((gone, new), changes(M, M_tb)):
        np.testing.assert_array_equal(np.sort(got), want)


@pytest.mark.parametrize("k", [0, 1, 2, 3, 5, 6, 7, 9])
def test_smallest_k_is_a_stable_sorts_first_k(k):
    values = np.array([0.3, 0.1, 0.3, 0.1, 0.0, 0.3, 0.2, 0.1, 0.3])
    want = np.sort(np.argsort(values, kind="stable")[:k])
    np.testing.assert_array_equal(tp.smallest_k(values, k), want)
    want = np.sort(np.argsort(-values, kind="stable")[:k])
    np.testing.assert_array_equal(tp.largest_k(values, k), want)


def test_updates_refuse_views_they_cannot_change_in_place():
    W, M, grad = layer((8, 6), 0.5, np.float64, 0)
    with pytest.raises(ValueError, match="C-contiguous"):
        tp.rigl_update_(W.T, M.T.copy(), grad.T, 0.3)
    with pytest.raises(ValueError, match="C-contiguous"):
        tp.set_update_(W.T.copy(), M.T, 0.3, np.random.default_rng(0), lambda r, n: np.zeros(n))
    with pytest.raises(ValueError, match="same shape"):
        tp.rigl_update_(W, M[:4].copy(), grad, 0.3)
    with pytest.raises(ValueError, match="same shape"):
        tp.prune_to_density(W, M[:4].copy(), 0.1)
    with pytest.raises(ValueError, match="grad"):
        tp.rigl_update_(W.copy(), M.copy(), grad[:4], 0.3)
