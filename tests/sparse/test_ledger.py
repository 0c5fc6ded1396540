"""Ledger: FLOP counts equal counts made here by hand from explicit masks."""
import math

import numpy as np
import pytest

from dfbst_np.sparse.ledger import CostTotals, LayerCost, layer_cost, total_cost


def kept(mask):
    """Nonzeros counted one entry at a time (independent of numpy's counting)."""
    return sum(1 for v in np.asarray(mask).ravel().tolist() if v != 0)


def explicit_layers(rng):
    """(name, n, M, D) of a LeNet-5-like step: a conv (N = batch * positions) and a linear."""
    conv_m = rng.random((20, 1, 5, 5)) < 0.3
    conv_d = rng.random((20, 1, 5, 5)) < 0.1
    fc_m = (rng.random((500, 800)) < 0.05).astype(np.float32)     # float masks as the layers hold them
    fc_d = (rng.random((500, 800)) < 0.02).astype(np.float32)
    return [("conv1", 64 * 24 * 24, conv_m, conv_d), ("fc3", 64, fc_m, fc_d)]


def test_layer_counts_match_hand_counts(rng):
    for name, n, m, d in explicit_layers(rng):
        c = layer_cost(name, n, m, d)
        numel = int(np.prod(m.shape))
        nm, nd = kept(m), kept(d)
        assert (c.name, c.n, c.numel, c.nnz_m, c.nnz_d) == (name, n, numel, nm, nd)
        assert c.forward_flops == 2 * n * nm
        assert c.backward_data_flops == 2 * n * nm
        assert c.weight_grad_flops_exact == 2 * n * numel
        assert c.weight_grad_flops_ideal == 2 * n * nd
        assert c.dense_flops == 3 * 2 * n * numel
        assert c.exact_flops == 4 * n * nm + 2 * n * numel
        assert c.ideal_flops == 4 * n * nm + 2 * n * nd
        assert c.exact_ratio == pytest.approx((4 * nm + 2 * numel) / (6 * numel), rel=1e-15)
        assert c.ideal_ratio == pytest.approx((4 * nm + 2 * nd) / (6 * numel), rel=1e-15)
        assert c.ideal_flops <= c.exact_flops <= c.dense_flops


def test_dense_weight_gradient_when_no_dmask(rng):
    m = rng.random((30, 40)) < 0.5
    c = layer_cost("fc", 64, m)
    assert c.nnz_d == 1200 and c.weight_grad_flops_ideal == c.weight_grad_flops_exact
    assert c.ideal_flops == c.exact_flops


def test_dense_method_costs_exactly_dense_training():
    c = layer_cost("fc", 64, np.ones((10, 100)))
    assert c.exact_flops == c.dense_flops == 6 * 64 * 1000 and c.exact_ratio == 1.0


def test_totals_sum_the_layers(rng):
    layers = explicit_layers(rng)
    totals = total_cost(layer_cost(*args) for args in layers)
    assert isinstance(totals, CostTotals) and totals.layers == 2
    fwd = sum(2 * n * kept(m) for _, n, m, _ in layers)
    grad_exact = sum(2 * n * m.size for _, n, m, _ in layers)
    grad_ideal = sum(2 * n * kept(d) for _, n, _, d in layers)
    dense = sum(6 * n * m.size for _, n, m, _ in layers)
    assert totals.forward_flops == totals.backward_data_flops == fwd
    assert totals.weight_grad_flops_exact == grad_exact
    assert totals.weight_grad_flops_ideal == grad_ideal
    assert totals.dense_flops == dense
    assert totals.exact_flops == 2 * fwd + grad_exact
    assert totals.ideal_flops == 2 * fwd + grad_ideal
    assert totals.numel == sum(m.size for _, _, m, _ in layers)
    assert totals.nnz_m == sum(kept(m) for _, _, m, _ in layers)
    assert totals.nnz_d == sum(kept(d) for _, _, _, d in layers)
    assert totals.exact_ratio == pytest.approx((2 * fwd + grad_exact) / dense, rel=1e-15)
    assert totals.ideal_ratio == pytest.approx((2 * fwd + grad_ideal) / dense, rel=1e-15)
    assert totals.as_dict()["dense_flops"] == dense


def test_large_counts_do_not_overflow():
    # VGG-16-sized: N * numel beyond int32, counts stay exact Python ints
    c = LayerCost("feature.40", n=64 * 4, numel=512 * 512 * 9, nnz_m=512 * 512 * 9, nnz_d=3)
    assert c.dense_flops == 6 * 256 * 2359296 and isinstance(c.dense_flops, int)


def test_edge_cases_and_errors(rng):
    zero = layer_cost("empty", 0, np.ones((3, 3)))
    assert zero.exact_flops == 0 and math.isnan(zero.exact_ratio)
    empty = total_cost([])
    assert empty.layers == 0 and empty.dense_flops == 0 and math.isnan(empty.ideal_ratio)
    assert layer_cost("off", 8, np.zeros((4, 4)), np.zeros((4, 4))).ideal_flops == 0
    with pytest.raises(ValueError, match="shape"):
        layer_cost("fc", 8, np.ones((4, 4)), np.ones((4, 5)))
    with pytest.raises(ValueError, match="n must"):
        layer_cost("fc", -1, np.ones((4, 4)))
    with pytest.raises(ValueError, match="exceeds"):
        LayerCost("fc", n=1, numel=4, nnz_m=5, nnz_d=0)
    c = layer_cost("fc", 2, np.ones((2, 2)))
    with pytest.raises(AttributeError):
        c.n = 3                                        # frozen: counts cannot drift from n


def test_support_only_weight_gradient_costs_its_support(rng):
    # SET (and RigL between updates): the weight gradient computed and needed on M only
    m = rng.random((50, 80)) < 0.1
    c = layer_cost("fc", 64, m, dmask=m, computed=m)
    nm = kept(m)
    assert c.nnz_exact == nm and c.weight_grad_flops_exact == 2 * 64 * nm
    assert c.weight_grad_flops_ideal == 2 * 64 * nm
    assert c.exact_flops == c.ideal_flops == 3 * 2 * 64 * nm
    assert c.exact_ratio == pytest.approx(nm / 4000, rel=1e-15)


def test_dense_gradient_step_of_a_sparse_method(rng):
    # GMP every step, RigL on its update steps: sparse forward, dense weight gradient
    m = rng.random((50, 80)) < 0.1
    c = layer_cost("fc", 64, m)
    assert c.nnz_exact == c.nnz_d == 4000
    assert c.exact_flops == c.ideal_flops == 4 * 64 * kept(m) + 2 * 64 * 4000
    # omitting computed is the same as passing a full pattern
    assert c == layer_cost("fc", 64, m, computed=np.ones((50, 80)))


def test_computed_pattern_is_checked():
    with pytest.raises(ValueError, match="computed shape"):
        layer_cost("fc3", 8, np.ones((4, 5)), computed=np.ones((5, 4)))
    with pytest.raises(ValueError, match="nnz_exact"):
        LayerCost("fc", n=2, numel=10, nnz_m=3, nnz_d=3, nnz_exact=11)
    with pytest.raises(ValueError, match="nnz_exact"):
        LayerCost("fc", n=2, numel=10, nnz_m=3, nnz_d=3, nnz_exact=-1)
