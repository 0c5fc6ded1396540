"""The optimised kernels give the dense path's numbers.

What is proven, in float64 to 1e-12 relative (max |a - b| / max |b|):

* the CSR kernels built from W and a boolean mask (``prepare_masked``: no
  W_hat formed, int32 indices, scipy's compiled products) equal BLAS on
  W * M for the forward and backward-data products, at mask densities 0
  (an all-zero mask), 0.1 %, 1 %, 5 %, 20 %, 50 % and 100 %, with empty
  rows and empty columns, for linear shapes and for the im2col shapes of
  convolutions with stride and padding (the products a MaskedConv2d runs);
* a reused structure (same mask, new weights) gives the same numbers as a
  fresh build, and a changed mask is not reused;
* both sampled-product kernels (gathering, and blocked BLAS that never
  forms the full A) equal the entries of dY^T X on a support, in CSR order
  and in any order, from the empty support to the full one;
* the fused per-weight passes (h, |W| - tau as a rank-1 update, row sums,
  the gradient rule, the backward mask) equal the literal formulas;
* the same products in the convolutions' transposed layout (X2^T, dY2^T:
  ``forward_t``, ``backward_data_t``, the sampled product with
  ``transposed=True``), and the transposed im2col/col2im in both position
  orders against :mod:`dfbst_np.nn.im2col`, with stride and padding;
* whole MaskedConv2d layers with stride and padding, narrow outputs (batch
  last) and wide ones, all-zero and partly empty masks: the sparse path
  equals the dense path and the engine's Conv2d on W * M (output, dx, every
  gradient), and the layer's first-layer mode (no input gradient) changes no
  gradient.
"""
import numpy as np
import pytest

from dfbst_np import textbook as tb
from dfbst_np.nn.im2col import col2im, im2col
from dfbst_np.nn.linear import Conv2d
from dfbst_np.sparse import kernels as K
from dfbst_np.nn.fast_im2col import col2im_t, from_output, im2col_t, to_output
from dfbst_np.sparse.backward_mask import backward_mask
from dfbst_np.sparse.entries import Entries
from dfbst_np.sparse.fused import row_sums, sub_rows
from dfbst_np.sparse.mask_rule import forward_mask, layer_grads
from dfbst_np.sparse.masked import MaskedConv2d, MaskedLinear
from dfbst_np.sparse.step import long_tailed
from tests.helpers import rel_err

TOL = 1e-12
DENSITIES = (0.0, 0.001, 0.01, 0.05, 0.2, 0.5, 1.0)


def conv_rows(rng, n, c, h, w, k, stride, padding):
    x = rng.standard_normal((n, c, h, w))
    return im2col(x, k, k, stride, padding)


# (rows-producing case, out): linear batches and im2col matrices of strided, padded convs
SHAPES = {
    "linear": (lambda rng: rng.standard_normal((64, 300)), 100),
    "linear_batch1": (lambda rng: rng.standard_normal((1, 37)), 11),
    "conv_s2_p1": (lambda rng: conv_rows(rng, 3, 8, 15, 15, 3, 2, 1), 16),
    "conv_s1_p2": (lambda rng: conv_rows(rng, 2, 6, 9, 11, 5, 1, 2), 10),
    "conv_s3_p0": (lambda rng: conv_rows(rng, 2, 4, 17, 13, 3, 3, 0), 7),
}


def mask_of(rng, out, fan_in, density):
    m = rng.random((out, fan_in)) < density
    if 0 < density < 1:
        m[out // 2] = False            # an empty row
        m[:, fan_in // 3] = False      # an empty column
    return m


@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_csr_products_equal_dense(shape, density):
    rng = np.random.default_rng(0)
    make_x, out = SHAPES[shape]
    x2 = make_x(rng)
    fan_in = x2.shape[1]
    w = rng.standard_normal((out, fan_in))
    m = mask_of(rng, out, fan_in, density)
    dy2 = rng.standard_normal((x2.shape[0], out))
    w_hat = w * m
    y_ref, dx_ref = x2 @ w_hat.T, dy2 @ w_hat
    for path in ("sparse", "dense", "auto"):
        mw = K.prepare_masked(w, m, path=path)
        y, dx = mw.forward(x2), mw.backward_data(dy2)
        assert y.dtype == dx.dtype == np.float64 and y.flags.c_contiguous and dx.flags.c_contiguous
        assert mw.nnz == int(m.sum())
        if density == 0.0:
            assert not y.any() and not dx.any()
        else:
            assert rel_err(y, y_ref) <= TOL, path
            assert rel_err(dx, dx_ref) <= TOL, path
    if m.any():
        mw = K.prepare_masked(w, m, path="sparse")
        mw.forward(x2)
        data, indices, indptr = mw._csr
        assert indices.dtype == indptr.dtype == np.int32     # the right integer width
        assert data.dtype == np.float64


@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_transposed_products_equal_dense(shape, density):
    rng = np.random.default_rng(0)
    make_x, out = SHAPES[shape]
    x2t = np.ascontiguousarray(make_x(rng).T)
    fan_in = x2t.shape[0]
    w = rng.standard_normal((out, fan_in))
    m = mask_of(rng, out, fan_in, density)
    dy2t = rng.standard_normal((out, x2t.shape[1]))
    w_hat = w * m
    for path in ("sparse", "dense", "auto"):
        mw = K.prepare_masked(w, m, path=path, transposed=True)
        y, dx = mw.forward_t(x2t), mw.backward_data_t(dy2t)
        assert y.shape == (out, x2t.shape[1]) and dx.shape == x2t.shape
        if density == 0.0:
            assert not y.any() and not dx.any()
        else:
            assert rel_err(y, w_hat @ x2t) <= TOL, path
            assert rel_err(dx, w_hat.T @ dy2t) <= TOL, path
    pattern = mask_of(rng, out, fan_in, max(density, 0.05))
    support = K.support_structure(pattern)
    a = dy2t @ x2t.T
    assert rel_err(K.weight_gradient_t(dy2t, x2t), a) <= TOL
    for path in ("sparse", "dense"):
        v = K.sampled_product_csr(dy2t, x2t, support, path=path, transposed=True)
        assert rel_err(v, a[pattern]) <= TOL, path


@pytest.mark.parametrize("batch_last", [False, True])
@pytest.mark.parametrize("k,stride,padding", [(3, 1, 0), (3, 2, 1), (5, 1, 2), (2, 3, 0), (1, 2, 0)])
def test_transposed_im2col_and_col2im(k, stride, padding, batch_last):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4, 11, 9))
    ref = im2col(x, k, k, stride, padding)                         # (positions, fan_in)
    cols_t = im2col_t(x, k, k, stride, padding, batch_last)
    n, oh, ow = 3, ref.shape[0] // 3, None
    oh = (11 + 2 * padding - k) // stride + 1
    ow = (9 + 2 * padding - k) // stride + 1
    order = (cols_t.reshape(-1, oh, ow, n).transpose(3, 1, 2, 0) if batch_last
             else cols_t.reshape(-1, n, oh, ow).transpose(1, 2, 3, 0))
    np.testing.assert_array_equal(order.reshape(-1, cols_t.shape[0]), ref)
    g = rng.standard_normal(cols_t.shape)
    g_rows = (g.reshape(-1, oh, ow, n).transpose(3, 1, 2, 0) if batch_last
              else g.reshape(-1, n, oh, ow).transpose(1, 2, 3, 0)).reshape(ref.shape)
    assert rel_err(col2im_t(g, x.shape, k, k, stride, padding, batch_last),
                   col2im(np.ascontiguousarray(g_rows), x.shape, k, k, stride, padding)) <= TOL
    y2t = rng.standard_normal((5, cols_t.shape[1]))
    y = to_output(y2t, n, oh, ow, batch_last)
    assert y.shape == (n, 5, oh, ow) and y.flags.c_contiguous
    np.testing.assert_array_equal(from_output(y, batch_last), y2t)


def test_csr_float32_keeps_dtype_and_matches(rng):
    w = rng.standard_normal((50, 120)).astype(np.float32)
    m = rng.random(w.shape) < 0.1
    x = rng.standard_normal((9, 120)).astype(np.float32)
    dy = rng.standard_normal((9, 50)).astype(np.float32)
    mw = K.prepare_masked(w, m, path="sparse")
    y, dx = mw.forward(x), mw.backward_data(dy)
    assert y.dtype == dx.dtype == np.float32
    w64 = (w * m).astype(np.float64)
    assert rel_err(y, x.astype(np.float64) @ w64.T) <= 1e-5
    assert rel_err(dx, dy.astype(np.float64) @ w64) <= 1e-5


def test_structure_reused_only_for_the_same_mask(rng):
    w = rng.standard_normal((40, 60))
    m = rng.random(w.shape) < 0.2
    x = rng.standard_normal((5, 60))
    first = K.prepare_masked(w, m, path="sparse")
    first.forward(x)
    w2 = w + rng.standard_normal(w.shape)          # new values, same mask
    again = K.prepare_masked(w2, m.copy(), path="sparse", previous=first)
    assert rel_err(again.forward(x), x @ (w2 * m).T) <= TOL
    assert again.reused
    m2 = m.copy()
    m2[0, 0] = not m2[0, 0]
    changed = K.prepare_masked(w2, m2, path="sparse", previous=again)
    assert rel_err(changed.forward(x), x @ (w2 * m2).T) <= TOL
    assert not changed.reused


def test_prepare_masked_refuses_bad_patterns(rng):
    w = rng.standard_normal((4, 6))
    with pytest.raises(TypeError, match="bool"):
        K.prepare_masked(w, (w > 0).astype(np.float64))
    with pytest.raises(TypeError, match="bool"):
        K.prepare_masked(w, np.ones((4, 5), bool))


# ---------------------------------------------------------------- sampled product

@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("shape", ["linear", "conv_s2_p1", "conv_s1_p2"])
def test_sampled_kernels_equal_dense_entries(shape, fraction):
    rng = np.random.default_rng(1)
    make_x, out = SHAPES[shape]
    x2 = make_x(rng)
    dy2 = rng.standard_normal((x2.shape[0], out))
    a = dy2.T @ x2
    pattern = mask_of(rng, out, x2.shape[1], fraction)
    support = K.support_structure(pattern)
    assert support.flat.dtype == np.intp and support.indptr.dtype == support.cols.dtype == np.int32
    r, c = np.nonzero(pattern)
    np.testing.assert_array_equal(support.rows, r)
    np.testing.assert_array_equal(support.cols, c)
    for path in ("sparse", "dense", "auto"):
        v = K.sampled_product_csr(dy2, x2, support, path=path)
        assert v.shape == (support.nnz,) and v.dtype == np.float64
        if support.nnz:
            assert rel_err(v, a[pattern]) <= TOL, path
        # any order, repeated entries: the generic entry point
        perm = rng.permutation(r.size)
        u = K.sampled_product(dy2, x2, r[perm], c[perm], path=path)
        if r.size:
            assert rel_err(u, a[r[perm], c[perm]]) <= TOL, path


def test_support_row_sums_with_empty_rows(rng):
    pattern = rng.random((12, 9)) < 0.3
    pattern[[0, 5, 11]] = False            # first, middle and last rows empty
    support = K.support_structure(pattern)
    v = rng.standard_normal(support.nnz)
    full = np.zeros(pattern.shape)
    full[pattern] = v
    assert rel_err(support.row_sums(v), full.sum(axis=1)) <= TOL
    empty = K.support_structure(np.zeros((3, 4), bool))
    assert empty.nnz == 0 and not empty.row_sums(np.zeros(0)).any()


@pytest.mark.parametrize("density", [0.0, 0.05, 0.5, 1.0])
def test_support_subset_is_the_support_of_the_sub_pattern(density):
    """A predicted layer takes M's structure from S = M | D_prev: the subset must be
    exactly what a pass over M gives (positions, row pointers, columns, widths), and
    products built from it must equal the ones built by that pass."""
    rng = np.random.default_rng(3)
    M = mask_of(rng, 40, 30, density)
    S_pattern = M | mask_of(rng, 40, 30, 0.2)
    S = K.support_structure(S_pattern)
    sub = S.subset(M.reshape(-1).take(S.flat))
    ref = K.support_structure(M)
    for a, b in ((sub.flat, ref.flat), (sub.indptr, ref.indptr), (sub.cols, ref.cols)):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    w, x = rng.standard_normal((40, 30)), rng.standard_normal((5, 30))
    called = []

    def source():
        called.append(1)
        return sub

    for path in ("sparse", "dense"):
        k = K.prepare_masked(w, M, path=path, support=source)
        plain = K.prepare_masked(w, M, path=path)
        np.testing.assert_array_equal(k.forward(x), plain.forward(x))
        assert len(called) == (1 if M.any() else 0)    # the dense path never asks for it


# ---------------------------------------------------------------- fused passes

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_passes_are_exact(rng, dtype):
    a = (rng.standard_normal((300, 784)) * 0.7).astype(dtype)
    v = rng.standard_normal(300).astype(dtype)
    np.testing.assert_array_equal(sub_rows(a, v), a - v[:, None])      # rank-1 BLAS, bit for bit
    b = a.copy()
    sub_rows(b, v, out=b)
    np.testing.assert_array_equal(b, a - v[:, None])
    np.testing.assert_array_equal(long_tailed(a), tb.h(a).astype(dtype))
    small = (a * 0.5).astype(dtype)                                     # no |x| > 1: short path
    np.testing.assert_array_equal(long_tailed(small), tb.h(small).astype(dtype))
    assert rel_err(row_sums(a), a.astype(np.float64).sum(axis=1)) <= (1e-12 if dtype == np.float64 else 1e-5)


@pytest.mark.parametrize("method", ["dst", "dfbst"])
@pytest.mark.parametrize("float32_masks", [False, True])
def test_gradient_rule_matches_literal_formula(rng, method, float32_masks):
    w = rng.normal(scale=0.6, size=(30, 70))
    t = rng.normal(scale=0.3, size=30)
    A = rng.normal(size=w.shape)
    fm = forward_mask(w, t.copy(), method)
    M, t_used = tb.forward_mask(w, t, method)
    z = np.abs(w) - tb.effective_threshold(t_used, method)[:, None]
    np.testing.assert_array_equal(fm.keep, M != 0)
    np.testing.assert_array_equal(fm.z, z)
    dW_ref, dt_ref = tb.layer_grads(A, w, t_used, M, method, float32_masks=float32_masks)
    dW, dt = layer_grads(Entries(A.copy()), w, t, fm, method, float32_masks=float32_masks,
                         overwrite_a=True)
    dW = dW.values
    np.testing.assert_array_equal(dW, dW_ref)                # every entry rounds as the literal one
    assert rel_err(dt, dt_ref) <= TOL
    # the rule on a support is the same rule, entry by entry
    pattern = rng.random(w.shape) < 0.3
    support = K.support_structure(pattern)
    values, dt_s = layer_grads(Entries(A[pattern], support), w, t, fm, method,
                               float32_masks=float32_masks)
    values = values.values
    np.testing.assert_array_equal(values, dW_ref[pattern])
    _, dt_on_pattern = tb.layer_grads(np.where(pattern, A, 0.0), w, t_used, M, method,
                                      float32_masks=float32_masks)
    assert rel_err(dt_s, dt_on_pattern) <= TOL


def test_backward_mask_dense_and_support_match_literal(rng):
    shapes = [(12, 40), (8, 75), (16, 144)]
    grads = [rng.standard_normal(s) * rng.lognormal(0, 2, size=(s[0], 1)) for s in shapes]
    grads[1][3] = 0.0                                     # a zero row
    us = [rng.uniform(-1, 2, size=s[0]) / s[1] for s in shapes]
    D, g, V, gu = tb.backward_mask(grads, us, scale=0.1)
    bm = backward_mask(grads, us, scale=0.1)
    assert rel_err(bm.V, V) <= TOL
    for k in range(3):
        np.testing.assert_array_equal(bm.D[k], D[k])
        assert rel_err(bm.masked[k], g[k]) <= TOL and rel_err(bm.grad_u[k], gu[k]) <= TOL
        assert bm.nnz[k] == int(D[k].sum())
    # the same gradients given on a support that holds every entry
    full = [Entries(dW.ravel().copy(), K.support_structure(np.ones(s, bool)))
            for s, dW in zip(shapes, grads)]
    sm = backward_mask(full, us, scale=0.1)
    assert rel_err(sm.V, V) <= TOL
    for k in range(3):
        np.testing.assert_array_equal(sm.D[k], D[k])
        assert rel_err(sm.masked[k].dense(), g[k]) <= TOL and rel_err(sm.grad_u[k], gu[k]) <= TOL
    # on a partial support: dW is taken as zero off it, rows normalise over it
    parts = [rng.random(s) < 0.4 for s in shapes]
    sparse = [Entries(dW[p], K.support_structure(p)) for p, dW in zip(parts, grads)]
    D2, g2, V2, gu2 = tb.backward_mask([np.where(p, dW, 0) for p, dW in zip(parts, grads)], us, scale=0.1)
    pm = backward_mask(sparse, us, scale=0.1)
    assert rel_err(pm.V, V2) <= TOL
    for k in range(3):
        np.testing.assert_array_equal(pm.D[k], D2[k] * parts[k])     # D lives on the support
        assert rel_err(pm.masked[k].dense(), g2[k]) <= TOL
        assert rel_err(pm.grad_u[k], gu2[k]) <= TOL


# ---------------------------------------------------------------- layers

CONVS = [dict(in_channels=3, out_channels=8, kernel_size=3, stride=2, padding=1),
         dict(in_channels=4, out_channels=6, kernel_size=5, stride=1, padding=2, bias=False),
         dict(in_channels=2, out_channels=5, kernel_size=3, stride=1, padding=1)]
CONV_INPUTS = [(3, 3, 11, 9), (3, 4, 11, 9), (2, 2, 7, 20)]     # the last: OW = 20, batch first


@pytest.mark.parametrize("density", [0.0, 0.03, 0.3, 1.0])
@pytest.mark.parametrize("conv", range(len(CONVS)))
def test_conv_layer_sparse_equals_dense(conv, density):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(CONV_INPUTS[conv])
    state = None
    results = {}
    for path in ("dense", "sparse"):
        layer = MaskedConv2d(method="dfbst", dtype=np.float64, kernel_path=path,
                             rng=np.random.default_rng(3), **CONVS[conv])
        if state is None:
            w2 = layer.weight2d
            if density == 0.0:
                w2[...] = 0.0
            else:
                q = np.quantile(np.abs(w2), 1 - density, axis=1)
                layer.params["threshold"][...] = q
                w2[1] = 0.0                           # an empty row
            state = layer.state_dict()
        layer.load_state_dict(state)
        y = layer.forward(x)
        dy = np.random.default_rng(4).standard_normal(y.shape)
        dx = layer.backward(dy)
        results[path] = dict(y=y, dx=dx, **{k: v.copy() for k, v in layer.grads.items()})
        # the engine's Conv2d (row layout) on W * M gives the same y, dx and A
        plain = Conv2d(dtype=np.float64, **{k: v for k, v in CONVS[conv].items()})
        plain.params["weight"][...] = layer.weight * layer.mask
        if "bias" in plain.params:
            plain.params["bias"][...] = layer.params["bias"]
        assert rel_err(plain.forward(x), y) <= TOL
        assert rel_err(plain.backward(dy), dx) <= TOL
        if "bias" in plain.params:
            assert rel_err(plain.grads["bias"], layer.grads["bias"]) <= TOL
        # no input gradient: the same weight gradients, dx skipped
        layer.load_state_dict(state)
        layer.next_step(input_grad=False)
        layer.forward(x)
        skipped = layer.backward(dy)
        assert skipped.shape == x.shape and not skipped.any()
        for k, v in layer.grads.items():
            np.testing.assert_array_equal(v, results[path][k])
    for k in results["dense"]:
        assert rel_err(results["sparse"][k], results["dense"][k]) <= TOL, k


def test_eval_reuses_the_mask_until_weights_change(rng):
    layer = MaskedLinear(30, 20, method="dfbst", dtype=np.float64, kernel_path="sparse", rng=rng)
    layer.params["threshold"][...] = 0.05
    x = rng.standard_normal((4, 30))
    layer.eval()
    y1 = layer.forward(x)
    kernel = layer.state.prev_kernel
    y2 = layer.forward(x)
    assert layer.state.prev_kernel is kernel and np.array_equal(y1, y2)
    layer.params["weight"][0, 0] += 1.0              # a change is seen
    y3 = layer.forward(x)
    assert layer.state.prev_kernel is not kernel
    w_hat = layer.weight * (np.abs(layer.weight) > 0.05)
    assert rel_err(y3, x @ w_hat.T + layer.params["bias"]) <= TOL
    layer.params["threshold"][...] = 0.06            # so is a threshold change
    y4 = layer.forward(x)
    w_hat = layer.weight * (np.abs(layer.weight) > 0.06)
    assert rel_err(y4, x @ w_hat.T + layer.params["bias"]) <= TOL
