"""The fast path equals the textbook (SPEC section 6), float64, 1e-12 relative.

What is proven:

* layers: MaskedLinear and MaskedConv2d (stride and padding, batch-first and
  batch-last position orders) on the dense, sparse and automatic kernel
  paths, exact and predicted with a full support (the previous D all ones),
  float32 masks off and on, methods dst and dfbst (and dense), forward
  densities 0 % (the reset fires), 5 %, 30 %, 70 % and 100 %: the forward output, M, t after the reset rule, dx, dW (the
  loss gradient before D), dt and the bias gradient equal
  :func:`~dfbst_np.textbook.forward_mask`, :func:`~dfbst_np.textbook.masked_forward`,
  :func:`~dfbst_np.textbook.masked_backward` and
  :func:`~dfbst_np.textbook.layer_grads` on the textbook im2col;
* every case for both implementations of the layer hooks (the layer made
  with ``impl="fast"`` and ``impl="textbook"``; the predicted mode is the
  fast implementation's only), so the textbook implementation is checked to
  *be* the textbook functions with the layer's plumbing;
* the backward mask: :func:`dfbst_np.sparse.backward_mask.backward_mask` on
  arrays and on Entries with a full support equals
  :func:`~dfbst_np.textbook.backward_mask` (D bit for bit, dW * D, V and
  d(beta V)/du), float32 masks off and on, with D keeping from 0 % to 100 %
  of the entries, a row of zeros in dW.
"""
import numpy as np
import pytest

from dfbst_np import textbook as tb
from dfbst_np.nn.im2col import col2im, im2col
from dfbst_np.sparse import kernels as K
from dfbst_np.sparse.backward_mask import backward_mask
from dfbst_np.sparse.entries import Entries
from dfbst_np.sparse.masked import MaskedConv2d, MaskedLinear
from tests.helpers import rel_err

TOL = 1e-12
DENSITIES = (0.0, 0.05, 0.3, 0.7, 1.0)
LAYERS = {
    "linear": (dict(in_features=40, out_features=12), (6, 40)),
    "conv_s2_p1": (dict(in_channels=3, out_channels=8, kernel_size=3, stride=2, padding=1), (3, 3, 11, 9)),
    "conv_s1_p2": (dict(in_channels=2, out_channels=5, kernel_size=5, stride=1, padding=2, bias=False),
                   (2, 2, 7, 20)),                                     # OW = 20: batch first
}


def build(kind, method, path, float32_masks, weight_grad="exact", impl="fast"):
    kwargs, x_shape = LAYERS[kind]
    cls = MaskedLinear if kind == "linear" else MaskedConv2d
    layer = cls(method=method, dtype=np.float64, kernel_path=path, float32_masks=float32_masks,
                rng=np.random.default_rng(3), weight_grad=weight_grad, impl=impl, **kwargs)
    return layer, x_shape


def set_density(layer, method, density, rng):
    """Thresholds keeping about ``density`` of each row (signs mixed for dfbst); W with a zero row."""
    if method == "dense":
        return
    w2 = layer.weight2d
    w2[1] = 0.0
    q = np.quantile(np.abs(w2), 1 - density, axis=1) if density > 0 else np.abs(w2).max(axis=1) + 1
    sign = rng.choice([-1.0, 1.0], size=q.size) if method == "dfbst" else 1.0
    layer.params["threshold"][...] = sign * q


def textbook_layer(layer, x, dy, method, float32_masks):
    """What the layer must give, from the textbook functions and the textbook im2col."""
    w2 = layer.weight2d.copy()
    t = layer.params["threshold"].copy() if method != "dense" else None
    b = layer.params.get("bias")
    conv = isinstance(layer, MaskedConv2d)
    if conv:
        kh, kw = layer.kernel_size
        X = im2col(x, kh, kw, layer.stride, layer.padding)
        dY = dy.transpose(0, 2, 3, 1).reshape(-1, w2.shape[0])
    else:
        X, dY = x, dy
    M, t_new = tb.forward_mask(w2, t, method)
    Y = tb.masked_forward(X, w2, M, b)
    A, dX = tb.masked_backward(dY, X, w2, M)
    dW, dt = tb.layer_grads(A, w2, t_new, M, method, float32_masks)
    out = dict(M=M, t=t_new, dW=dW, dt=dt, bias=None if b is None else dY.sum(axis=0))
    if conv:
        n, _, oh, ow = dy.shape
        out["y"] = Y.reshape(n, oh, ow, -1).transpose(0, 3, 1, 2)
        out["dx"] = col2im(dX, x.shape, kh, kw, layer.stride, layer.padding)
    else:
        out["y"], out["dx"] = Y, dX
    return out


def layer_errors(layer, x, dy, expect, method):
    """Relative errors of the fast layer's forward and backward against ``expect``."""
    y = layer.forward(x)
    dx = layer.backward(dy)
    errs = {"y": rel_err(y, expect["y"]), "dx": rel_err(dx, expect["dx"]),
            "dW": rel_err(layer.loss_grad().dense(), expect["dW"]),
            "grads.weight": rel_err(layer.grads["weight"].reshape(expect["dW"].shape), expect["dW"])}
    if expect["bias"] is not None:
        errs["bias"] = rel_err(layer.grads["bias"], expect["bias"])
    if method != "dense":
        np.testing.assert_array_equal(layer.mask.reshape(expect["M"].shape), expect["M"])
        np.testing.assert_array_equal(layer.params["threshold"], expect["t"])
        errs["dt"] = rel_err(layer.grads["threshold"], expect["dt"])
    return errs


CASES = [(kind, method, path, f32, mode, density)
         for kind in LAYERS for method in ("dst", "dfbst") for path in ("dense", "sparse", "auto")
         for f32 in (False, True) for mode in ("exact", "predicted") for density in DENSITIES
         if mode == "exact" or method == "dfbst"]
CASES += [(kind, "dense", path, False, "exact", 1.0) for kind in LAYERS for path in ("dense", "sparse", "auto")]
IMPL_CASES = [case + (impl,) for case in CASES for impl in ("fast", "textbook")
              if impl == "fast" or case[4] == "exact"]


@pytest.mark.parametrize("kind,method,path,float32_masks,mode,density,impl", IMPL_CASES)
def test_layer_equals_textbook(kind, method, path, float32_masks, mode, density, impl):
    rng = np.random.default_rng(5)
    layer, x_shape = build(kind, method, path, float32_masks, weight_grad=mode, impl=impl)
    set_density(layer, method, density, rng)
    if mode == "predicted":
        layer.dmask = np.ones(layer.weight.shape)         # S = everything
    x = rng.standard_normal(x_shape)
    dy = rng.standard_normal(layer.output_shape(x_shape) if kind != "linear"
                             else (x_shape[0], layer.out_features))
    expect = textbook_layer(layer, x, dy, method, float32_masks)
    errs = layer_errors(layer, x, dy, expect, method)
    assert max(errs.values()) <= TOL, errs
    assert layer.last_weight_grad == mode
    if mode == "predicted":
        assert not layer.loss_grad().full and layer.loss_grad().values.size == layer.weight.size
    if method != "dense" and density == 0:           # the case is what it claims: the reset fired
        assert np.all(layer.params["threshold"] == 0)
    assert layer.impl.kind == impl


# ------------------------------------------------------------- backward mask

SHAPES = [(12, 40), (8, 75), (16, 27)]


def grads_and_us(keep, rng):
    """Per layer dW (a row of zeros in the first) and u letting D keep about ``keep`` of each row."""
    grads = [rng.standard_normal(s) * rng.lognormal(0, 2, size=(s[0], 1)) for s in SHAPES]
    grads[0][3] = 0.0
    us = []
    for dW in grads:
        ghat = np.abs(tb.row_normalise(dW))
        if keep == 0:
            u = ghat.max(axis=1) + 0.1
        elif keep == 1:
            u = np.full(dW.shape[0], -0.5)
        else:
            srt = np.sort(ghat, axis=1)[:, ::-1]        # u halfway between two entries: no ties
            k = max(1, int(keep * dW.shape[1]))
            u = (srt[:, k - 1] + srt[:, k]) / 2
        u[-1] = -1.5                                     # h's zero and tail visited too
        us.append(u)
    return grads, us


@pytest.mark.parametrize("float32_masks", [False, True])
@pytest.mark.parametrize("keep", [0.0, 0.05, 0.5, 1.0])
@pytest.mark.parametrize("layout", ["arrays", "full support"])
def test_backward_mask_equals_textbook(layout, keep, float32_masks):
    rng = np.random.default_rng(11)
    grads, us = grads_and_us(keep, rng)
    Ds, gs, V, dV_du = tb.backward_mask(grads, us, scale=0.1, float32_masks=float32_masks)
    if layout == "arrays":
        given = [g.copy() for g in grads]
    else:
        given = [Entries(g.ravel().copy(), K.support_structure(np.ones(g.shape, bool))) for g in grads]
    bm = backward_mask(given, us, scale=0.1, float32_masks=float32_masks)
    errs = {"V": rel_err(bm.V, V)}
    for k in range(len(SHAPES)):
        np.testing.assert_array_equal(bm.D[k], Ds[k])
        np.testing.assert_array_equal(bm.patterns[k].keep, Ds[k] != 0)
        assert bm.nnz[k] == int(Ds[k].sum())
        masked = bm.masked[k] if layout == "arrays" else bm.masked[k].dense()
        errs[f"dW*D {k}"] = rel_err(masked, gs[k])
        errs[f"dV/du {k}"] = rel_err(bm.grad_u[k], dV_du[k])
    assert max(errs.values()) <= TOL, errs
    kept = np.concatenate([d.ravel() for d in Ds]).mean()
    assert (kept < 0.1) if keep == 0 else (kept > 0.9) if keep == 1 else (0 < kept < 1)
