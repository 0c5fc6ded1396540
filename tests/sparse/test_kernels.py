"""Kernels: both paths agree, keep dtype and layout, and the choice is controllable."""
import numpy as np
import pytest

from dfbst_np.sparse.kernels import (
    MaskedWeight, choose_path, crossover_density, get_default_path, prepare_weight,
    sampled_crossover, sampled_product, sampled_product_dense, set_default_path, use_path,
)
from tests.helpers import rel_err

DENSITIES = (0.0, 0.001, 0.01, 0.05, 0.2, 0.5, 1.0)
TOL = {np.float64: 1e-12, np.float32: 1e-5}


def masked_weight(rng, out, fan_in, density, dtype, empty_rows=()):
    w = rng.standard_normal((out, fan_in))
    w *= rng.random((out, fan_in)) < density
    w[list(empty_rows)] = 0.0
    return w.astype(dtype)


def reference(w, x, dy):
    """The three products in float64 straight from their definitions."""
    w, x, dy = (a.astype(np.float64) for a in (w, x, dy))
    return x @ w.T, dy @ w, dy.T @ x


@pytest.fixture(autouse=True)
def restore_default():
    previous = get_default_path()
    yield
    set_default_path(previous)


# ---------------------------------------------------------------- products

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("rows,out,fan_in", [(64, 300, 784), (64 * 24 * 24, 20, 25)])
def test_sparse_equals_dense(rng, dtype, density, rows, out, fan_in):
    w = masked_weight(rng, out, fan_in, density, dtype, empty_rows=(0, out // 2))
    x = rng.standard_normal((rows, fan_in)).astype(dtype)
    dy = rng.standard_normal((rows, out)).astype(dtype)
    dense, sparse = prepare_weight(w, "dense"), prepare_weight(w, "sparse")
    assert (dense.path, sparse.path) == ("dense", "sparse")
    w64, x64, dy64 = (a.astype(np.float64) for a in (w, x, dy))
    y_ref, dx_ref = x64 @ w64.T, dy64 @ w64
    results = {}
    for mw in (dense, sparse):
        y, dx = results[mw.path] = mw.forward(x), mw.backward_data(dy)
        assert y.shape == (rows, out) and dx.shape == (rows, fan_in)
        assert y.dtype == dtype and dx.dtype == dtype
        assert y.flags.c_contiguous and dx.flags.c_contiguous
        if density == 0:
            assert not y.any() and not dx.any()
        else:
            assert rel_err(y, y_ref) <= TOL[dtype]
            assert rel_err(dx, dx_ref) <= TOL[dtype]
    if density > 0:
        for got, want in zip(results["sparse"], results["dense"]):
            assert rel_err(got, want) <= TOL[dtype]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_all_zero_mask_and_empty_rows(rng, dtype):
    x = rng.standard_normal((7, 30)).astype(dtype)
    dy = rng.standard_normal((7, 12)).astype(dtype)
    for path in ("dense", "sparse", "auto"):
        mw = prepare_weight(np.zeros((12, 30), dtype), path)
        assert mw.nnz == 0 and mw.density == 0.0
        y, dx = mw.forward(x), mw.backward_data(dy)
        assert y.shape == (7, 12) and dx.shape == (7, 30) and y.dtype == dx.dtype == dtype
        assert not y.any() and not dx.any()
    # one nonzero row among empty ones: the empty rows give zero outputs
    w = np.zeros((12, 30), dtype)
    w[5] = rng.standard_normal(30)
    mw = prepare_weight(w, "sparse")
    y = mw.forward(x)
    assert not np.delete(y, 5, axis=1).any()
    assert rel_err(y[:, 5], x.astype(np.float64) @ w[5].astype(np.float64)) <= TOL[dtype]
    assert rel_err(mw.backward_data(dy), dy.astype(np.float64) @ w.astype(np.float64)) <= TOL[dtype]


def test_density_nnz_and_full_density(rng):
    w = masked_weight(rng, 40, 50, 0.3, np.float64)
    mw = prepare_weight(w, "sparse")
    assert mw.nnz == np.count_nonzero(w) and mw.density == mw.nnz / w.size
    full = rng.standard_normal((40, 50))
    assert prepare_weight(full, "sparse").density == 1.0


def test_odd_batch_sizes_and_noncontiguous_input(rng):
    w = masked_weight(rng, 9, 13, 0.4, np.float64)
    mw = prepare_weight(w, "sparse")
    for rows in (0, 1, 2):
        x = rng.standard_normal((rows, 13))
        dy = rng.standard_normal((rows, 9))
        assert mw.forward(x).shape == (rows, 9) and mw.backward_data(dy).shape == (rows, 13)
        if rows:
            assert rel_err(mw.forward(x), x @ w.T) <= 1e-12
            assert rel_err(mw.backward_data(dy), dy @ w) <= 1e-12
    xt = rng.standard_normal((13, 5)).T          # Fortran-ordered view
    assert rel_err(mw.forward(xt), xt @ w.T) <= 1e-12
    wf = np.asfortranarray(w)                     # e.g. a transposed weight view
    mwf = prepare_weight(wf, "sparse")
    assert rel_err(mwf.forward(xt), xt @ w.T) <= 1e-12
    assert rel_err(mwf.backward_data(dy), dy @ w) <= 1e-12


def test_bad_inputs_are_refused(rng):
    w = rng.standard_normal((4, 6))
    mw = prepare_weight(w, "sparse")
    with pytest.raises(TypeError, match="float64"):
        mw.forward(np.ones((2, 6), np.float32))          # no silent cast
    with pytest.raises(ValueError, match="6 columns"):
        mw.forward(np.ones((2, 5)))
    with pytest.raises(ValueError, match="4 columns"):
        mw.backward_data(np.ones((2, 6)))
    with pytest.raises(ValueError, match="2-D"):
        prepare_weight(np.ones((2, 3, 4)))
    with pytest.raises(TypeError):
        prepare_weight(np.ones((2, 3), np.int64))
    with pytest.raises(ValueError, match="path"):
        prepare_weight(w, "csr")


# ---------------------------------------------------------------- sampled product

@pytest.mark.parametrize("rows,out,fan_in", [(64, 30, 78), (3000, 20, 25)])
def test_sampled_product_matches_dense_entries(rng, rows, out, fan_in):
    dy = rng.standard_normal((rows, out))
    x = rng.standard_normal((rows, fan_in))
    _, _, a = reference(np.zeros((out, fan_in)), x, dy)
    r, c = np.nonzero(rng.random((out, fan_in)) < 0.1)
    for path in ("sparse", "dense", "auto"):
        v = sampled_product(dy, x, r, c, path=path)
        assert v.shape == r.shape and v.dtype == np.float64
        assert rel_err(v, a[r, c]) <= 1e-12
    # unsorted, repeated support entries
    perm = rng.permutation(np.r_[np.arange(r.size), np.arange(r.size)[:5]])
    assert rel_err(sampled_product(dy, x, r[perm], c[perm], path="sparse"), a[r[perm], c[perm]]) <= 1e-12


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sampled_product_full_support_is_dense_a(rng, dtype):
    rows, out, fan_in = 50, 12, 17
    dy = rng.standard_normal((rows, out)).astype(dtype)
    x = rng.standard_normal((rows, fan_in)).astype(dtype)
    _, _, a = reference(np.zeros((out, fan_in)), x, dy)
    r, c = np.nonzero(np.ones((out, fan_in), bool))
    for path in ("sparse", "dense"):
        full = sampled_product_dense(dy, x, r, c, path=path)
        assert full.shape == (out, fan_in) and full.dtype == dtype and full.flags.c_contiguous
        assert rel_err(full, a) <= TOL[dtype]


def test_sampled_product_dense_zero_off_support(rng):
    dy, x = rng.standard_normal((20, 6)), rng.standard_normal((20, 9))
    support = rng.random((6, 9)) < 0.3
    r, c = np.nonzero(support)
    got = sampled_product_dense(dy, x, r, c, path="sparse")
    assert not got[~support].any()
    assert rel_err(got[support], (dy.T @ x)[support]) <= 1e-12
    empty = np.array([], dtype=np.int64)
    assert sampled_product(dy, x, empty, empty, path="sparse").shape == (0,)
    assert not sampled_product_dense(dy, x, empty, empty).any()


def test_sampled_product_bad_support(rng):
    dy, x = rng.standard_normal((5, 3)), rng.standard_normal((5, 4))
    with pytest.raises(ValueError, match="rows"):
        sampled_product(dy, x, np.array([-1]), np.array([0]))   # would wrap silently
    with pytest.raises(ValueError, match="cols"):
        sampled_product(dy, x, np.array([0]), np.array([4]))
    with pytest.raises(TypeError):
        sampled_product(dy, x, np.array([0.0]), np.array([0]))
    with pytest.raises(TypeError):
        sampled_product(dy, x.astype(np.float32), np.array([0]), np.array([0]))


# ---------------------------------------------------------------- automatic choice

def test_use_path_restores_previous_default():
    set_default_path("sparse")
    with use_path("dense"):
        assert get_default_path() == "dense"
        with use_path("auto"):
            assert get_default_path() == "auto"
        assert get_default_path() == "dense"
    assert get_default_path() == "sparse"
    with pytest.raises(RuntimeError):
        with use_path("dense"):
            raise RuntimeError
    assert get_default_path() == "sparse"
    with pytest.raises(ValueError):
        set_default_path("fast")


def test_default_and_per_call_override(rng):
    w = masked_weight(rng, 300, 784, 1.0, np.float32)
    with use_path("sparse"):
        assert prepare_weight(w).path == "sparse"
        assert prepare_weight(w, "dense").path == "dense"
    with use_path("dense"):
        mw = prepare_weight(w)
        assert mw.path == "dense" and mw.requested == "dense"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_auto_picks_sparse_when_very_sparse_and_dense_when_full(rng, dtype):
    with use_path("auto"):
        low = prepare_weight(masked_weight(rng, 300, 784, 0.001, dtype), n_rows=64)
        assert low.requested == "auto" and low.path == "sparse"
        assert prepare_weight(masked_weight(rng, 300, 784, 1.0, dtype), n_rows=64).path == "dense"
        assert prepare_weight(np.zeros((300, 784), dtype), n_rows=64).path == "sparse"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_crossover_shape_dependence(dtype):
    big = crossover_density(256, 512, 4608, dtype)
    assert 0.0 < big < 0.5
    # many rows of a thin conv weight: the transposes cost more than BLAS
    assert crossover_density(64 * 24 * 24, 20, 25, dtype) == 0.0
    # fewer rows leave the per-step build less amortised
    assert crossover_density(8, 512, 4608, dtype) < big
    assert crossover_density(None, 512, 4608, dtype) >= big
    assert crossover_density(0, 10, 10, dtype) == 0.0
    assert choose_path(0.0, 64 * 24 * 24, 20, 25, dtype) == "sparse"
    assert choose_path(1.0, 256, 512, 4608, dtype) == "dense"
    assert choose_path(big / 2, 256, 512, 4608, dtype) == "sparse"
    assert 0.0 <= sampled_crossover(256, 512, 4608, dtype) < 0.5
    with pytest.raises(ValueError):
        crossover_density(64, 10, 10, np.float16)


def test_masked_weight_repr(rng):
    mw = MaskedWeight(masked_weight(rng, 3, 4, 0.5, np.float64), path="dense")
    assert "dense" in repr(mw) and "(3, 4)" in repr(mw)


def test_auto_without_rows_decides_at_first_product(rng):
    out, fan_in, rows, dtype = 300, 784, 64, np.float32
    low, high = crossover_density(rows, out, fan_in, dtype), crossover_density(None, out, fan_in, dtype)
    assert low < high          # few rows leave the build less amortised
    w = masked_weight(rng, out, fan_in, (low + high) / 2, dtype)
    x = rng.standard_normal((rows, fan_in)).astype(dtype)
    dy = rng.standard_normal((rows, out)).astype(dtype)
    mw = prepare_weight(w, "auto")
    assert "undecided" in repr(mw)
    y = mw.forward(x)                        # the rows of x decide
    assert mw.path == choose_path(mw.density, rows, out, fan_in, dtype) == "dense"
    assert rel_err(mw.backward_data(dy), dy.astype(np.float64) @ w.astype(np.float64)) <= 1e-5
    assert rel_err(y, x.astype(np.float64) @ w.T.astype(np.float64)) <= 1e-5
    early = prepare_weight(w, "auto")
    assert early.path == "sparse"            # read before any product: many-rows limit
    assert rel_err(early.forward(x), y) <= 1e-5
    assert prepare_weight(w, "auto", n_rows=rows).path == "dense"
