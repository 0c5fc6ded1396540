"""The comparison methods' textbook functions against small cases computed by hand.

SPEC section 8: ERK (a split where a layer goes dense, and a conv shape whose
kernel counts), the magnitude mask and its ties, GMP's cubic schedule and
RigL's cosine fraction at their boundaries, a RigL update whose drop and
grow sets are written out (ties in both), and SET's kept count and
positions. Inputs are never modified.
"""
import math

import numpy as np
import pytest

from dfbst_np import textbook as tb


# ---- ERK ---------------------------------------------------------------------------------

def test_erk_small_layer_goes_dense_and_eps_is_solved_again():
    # (100, 100): 10,000 weights, sum/prod = 200/10,000; (2, 5): 10 weights, 7/10.
    # density 0.1 -> 1,001 kept. First eps = 1001/(200 + 7) gives the small
    # layer 4.84 > 1: it is set dense, and eps = (1001 - 10)/200 gives the big
    # layer 991/10,000.
    d = tb.erk_densities([(100, 100), (2, 5)], 0.1)
    assert d[1] == 1.0
    assert d[0] == pytest.approx(991 / 10000, rel=1e-15)
    assert d[0] * 10000 + d[1] * 10 == pytest.approx(1001, rel=1e-15)


def test_erk_conv_counts_its_kernel():
    # (4, 2, 3, 3): sum 12, prod 72; (8, 72): sum 80, prod 576; density 0.25 of 648 = 162.
    # eps = 162 / (12 + 80); d = eps * 12/72 = 27/92 and eps * 80/576 = 45/184.
    d = tb.erk_densities([(4, 2, 3, 3), (8, 72)], 0.25)
    assert d == pytest.approx([27 / 92, 45 / 184], rel=1e-15)
    # a (8, 72) linear with the same weights as a conv: ERK differs by the kernel terms
    assert tb.erk_densities([(4, 18), (8, 72)], 0.25) != d


def test_erk_lenet300_100_keeps_the_last_layer_dense():
    shapes = [(300, 784), (100, 300), (10, 100)]
    d = tb.erk_densities(shapes, 0.1)
    sizes = [math.prod(s) for s in shapes]
    assert d[2] == 1.0 and 0 < d[0] < d[1] < 1
    assert sum(di * n for di, n in zip(d, sizes)) == pytest.approx(0.1 * sum(sizes), rel=1e-14)
    # the free layers keep eps * sum/prod with one eps
    assert d[0] / (sum(shapes[0]) / sizes[0]) == pytest.approx(d[1] / (sum(shapes[1]) / sizes[1]),
                                                               rel=1e-14)


def test_erk_two_layers_dense_and_density_one():
    d = tb.erk_densities([(1000, 1000), (3, 3), (2, 2)], 0.01)
    assert d[1] == d[2] == 1.0
    assert d[0] == pytest.approx((0.01 * 1000013 - 13) / 1e6, rel=1e-14)
    assert tb.erk_densities([(10, 20), (5, 5, 3, 3)], 1.0) == pytest.approx([1.0, 1.0], rel=1e-14)


# ---- magnitude mask and random mask -------------------------------------------------------

def test_magnitude_mask_keeps_largest_and_breaks_ties_by_lower_index():
    W = np.array([[3.0, -1.0, 1.0], [0.0, -3.0, 2.0]])
    before = W.copy()
    # |W| = 3, 1, 1, 0, 3, 2 (flat). k = 3: 3 (index 0), 3 (index 4), 2 (index 5)
    assert tb.magnitude_mask(W, 0.5).tolist() == [[1, 0, 0], [0, 1, 1]]
    # k = 4: the tie 1 vs 1 goes to flat index 1, not 2
    assert tb.magnitude_mask(W, 4 / 6).tolist() == [[1, 1, 0], [0, 1, 1]]
    # round(1.5) = 2, round(4.5) = 4 (Python's round, half to even)
    assert tb.magnitude_mask(W, 0.25).sum() == 2 and tb.magnitude_mask(W, 0.75).sum() == 4
    assert tb.magnitude_mask(W, 0.0).sum() == 0 and tb.magnitude_mask(W, 1.0).sum() == 6
    assert tb.magnitude_mask(W.astype(np.float32), 0.5).dtype == np.float32
    np.testing.assert_array_equal(W, before)


def test_magnitude_mask_of_a_conv_weight_keeps_its_shape():
    W = np.arange(24, dtype=np.float64).reshape(2, 3, 2, 2) - 11.5
    M = tb.magnitude_mask(W, 0.25)
    assert M.shape == W.shape and M.sum() == 6
    # the six largest |W| are the first three and last three entries
    assert np.flatnonzero(M).tolist() == [0, 1, 2, 21, 22, 23]


def test_random_mask_counts_and_draw():
    M = tb.random_mask((30, 7), 0.2, np.random.default_rng(3))
    assert M.shape == (30, 7) and M.sum() == 42 and set(np.unique(M)) <= {0.0, 1.0}
    expect = np.random.default_rng(3).choice(210, size=42, replace=False)
    assert sorted(np.flatnonzero(M).tolist()) == sorted(expect.tolist())


# ---- schedules ----------------------------------------------------------------------------

def test_gmp_density_boundaries_and_cube():
    f = lambda s: tb.gmp_density(s, 0.1, 10, 20)
    assert f(0) == 1.0 and f(9) == 1.0 and f(10) == 1.0
    assert f(15) == pytest.approx(0.1 + 0.9 * 0.5 ** 3, rel=1e-15)     # 0.2125
    assert f(19) == pytest.approx(0.1 + 0.9 * 0.1 ** 3, rel=1e-12)
    assert f(20) == 0.1 and f(1000) == 0.1
    assert tb.gmp_density(15, 0.2, 10, 20, initial=0.6) == pytest.approx(0.2 + 0.4 / 8, rel=1e-15)
    values = [f(s) for s in range(0, 25)]
    assert all(a >= b for a, b in zip(values, values[1:]))              # never grows back


def test_cosine_fraction_boundaries():
    assert tb.cosine_fraction(0, 0.3, 100) == pytest.approx(0.3, rel=1e-15)
    assert tb.cosine_fraction(50, 0.3, 100) == pytest.approx(0.15, rel=1e-15)
    assert tb.cosine_fraction(25, 0.3, 100) == pytest.approx(0.15 * (1 + math.sqrt(0.5)), rel=1e-15)
    assert 0 < tb.cosine_fraction(99, 0.3, 100) < 1e-3
    assert tb.cosine_fraction(100, 0.3, 100) == 0.0 and tb.cosine_fraction(250, 0.3, 100) == 0.0


# ---- RigL ---------------------------------------------------------------------------------

def example_layer():
    W = np.array([[0.5, -0.1, 0.0, 0.3],
                  [0.0, 0.2, -0.4, 0.0]])
    M = np.array([[1.0, 1.0, 0.0, 1.0],
                  [0.0, 1.0, 1.0, 0.0]])
    return W, M


def test_rigl_update_written_out():
    W, M = example_layer()
    grad = np.array([[0.0, 0.9, 0.7, 0.1],
                     [-0.7, 0.05, 0.0, 0.6]])
    inputs = [a.copy() for a in (W, M, grad)]
    # nnz 5, f = 0.5: k = floor(2.5) = 2.
    # drop: active |W| = 0.5 (0), 0.1 (1), 0.3 (3), 0.2 (5), 0.4 (6) -> {1, 5}.
    # grow among inactive after the drop {1, 2, 4, 5, 7}, |grad| 0.9, 0.7, 0.7, 0.05, 0.6:
    # 0.9 at 1, then the tie 0.7 at 2 and 4 goes to 2 -> {1, 2}.
    # 1 was dropped and grown back: keeps -0.1; 2 is new: starts at 0; 5 is gone: 0.
    W_new, M_new = tb.rigl_update(W, M, grad, 0.5)
    assert M_new.tolist() == [[1, 1, 1, 1], [0, 0, 1, 0]]
    assert W_new.tolist() == [[0.5, -0.1, 0.0, 0.3], [0.0, 0.0, -0.4, 0.0]]
    assert M_new.sum() == M.sum() and M_new.dtype == M.dtype and W_new.dtype == W.dtype
    for a, b in zip((W, M, grad), inputs):
        np.testing.assert_array_equal(a, b)


def test_rigl_ties_in_drop_and_grow_go_to_the_lower_index():
    W = np.array([[0.2, -0.2, 0.5, 0.0]])
    M = np.array([[1.0, 1.0, 1.0, 0.0]])
    grad = np.array([[0.3, 9.0, 9.0, 0.3]])
    # k = floor(0.34 * 3) = 1: |W| tie 0.2 at 0 and 1 -> drop 0. Inactive after: {0, 3},
    # |grad| tie 0.3 -> grow 0 back (it keeps 0.2): nothing changes.
    W_new, M_new = tb.rigl_update(W, M, grad, 0.34)
    np.testing.assert_array_equal(M_new, M)
    np.testing.assert_array_equal(W_new, W)
    # with grad favouring 3, 0 leaves (W 0) and 3 enters (W 0)
    W_new, M_new = tb.rigl_update(W, M, np.array([[0.3, 9.0, 9.0, 0.4]]), 0.34)
    assert M_new.tolist() == [[0, 1, 1, 1]] and W_new.tolist() == [[0.0, -0.2, 0.5, 0.0]]


def test_rigl_counts_k_with_floor_and_fraction_zero_changes_nothing():
    W, M = example_layer()
    grad = np.ones_like(W)
    # f = 0.39: floor(1.95) = 1 -> only flat 1 (|W| 0.1) leaves; grown: the lowest inactive, 1
    W1, M1 = tb.rigl_update(W, M, grad, 0.39)
    np.testing.assert_array_equal(M1, M)
    W0, M0 = tb.rigl_update(W, M, grad * np.arange(8).reshape(2, 4), 0.0)
    np.testing.assert_array_equal(M0, M)
    np.testing.assert_array_equal(W0, W)


def test_rigl_on_a_conv_weight():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((3, 2, 2, 2))
    M = tb.random_mask(W.shape, 0.5, rng)
    W = W * M
    grad = rng.standard_normal(W.shape)
    W_new, M_new = tb.rigl_update(W, M, grad, 0.25)
    assert W_new.shape == W.shape and M_new.sum() == 12
    k = 3
    active = np.flatnonzero(M)
    dropped = set(active[np.argsort(np.abs(W.ravel()[active]))[:k]].tolist())
    assert set(np.flatnonzero(M).tolist()) - set(np.flatnonzero(M_new).tolist()) <= dropped
    np.testing.assert_array_equal(W_new * (1 - M_new), 0)


# ---- SET ----------------------------------------------------------------------------------

def test_set_update_kept_count_and_positions():
    W, M = example_layer()
    inputs = (W.copy(), M.copy())
    init = lambda rng, n: np.full(n, 7.0)
    # zeta 0.3 of nnz 5: k = floor(1.5) = 1; the weight closest to 0 is flat 1 (-0.1).
    # Inactive after the drop, in flat order: [1, 2, 4, 7]; one is drawn.
    W_new, M_new = tb.set_update(W, M, 0.3, np.random.default_rng(5), init)
    grown = np.random.default_rng(5).choice(np.array([1, 2, 4, 7]), size=1, replace=False)[0]
    kept = [0, 3, 5, 6]
    assert sorted(np.flatnonzero(M_new).tolist()) == sorted(kept + [grown])
    assert M_new.sum() == 5
    assert W_new.ravel()[kept].tolist() == [0.5, 0.3, 0.2, -0.4]
    # a new position takes init's value; flat 1 drawn back keeps its weight
    assert W_new.ravel()[grown] == (-0.1 if grown == 1 else 7.0)
    np.testing.assert_array_equal(W_new * (1 - M_new), 0)
    np.testing.assert_array_equal(W, inputs[0])
    np.testing.assert_array_equal(M, inputs[1])


def test_set_update_many_draws_cover_every_inactive_position():
    W, M = example_layer()
    seen = set()
    for seed in range(60):
        W_new, M_new = tb.set_update(W, M, 0.3, np.random.default_rng(seed),
                                     lambda rng, n: rng.uniform(-1, 1, n))
        on = set(np.flatnonzero(M_new).tolist())
        assert {0, 3, 5, 6} <= on and len(on) == 5
        seen |= on - {0, 3, 5, 6}
    assert seen == {1, 2, 4, 7}


def test_set_update_of_a_full_mask_changes_nothing():
    # an ERK layer set dense: the dropped weights are the only inactive positions,
    # they are drawn back and keep their values
    W = np.array([[0.5, -0.1], [0.2, 0.3]])
    M = np.ones_like(W)
    W_new, M_new = tb.set_update(W, M, 0.5, np.random.default_rng(0), lambda rng, n: np.ones(n))
    np.testing.assert_array_equal(M_new, M)
    np.testing.assert_array_equal(W_new, W)


def test_comparison_lists_the_section_in_file_order():
    import inspect
    lines = [inspect.getsourcelines(getattr(tb, n))[1] for n in tb.COMPARISON]
    assert lines == sorted(lines) and lines[0] > inspect.getsourcelines(tb.backward_mask)[1]
    assert not set(tb.COMPARISON) & set(tb.__all__)
