"""The Module tree: dotted names, state dicts, modes and gradients, against torch.nn."""
import numpy as np
import pytest

from dfbst_np.nn import Conv2d, Linear, Module
from dfbst_np.nn.activations import ReLU
from dfbst_np.nn.batchnorm import BatchNorm1d, BatchNorm2d
from dfbst_np.nn.containers import Sequential
from dfbst_np.nn.dropout import Dropout
from dfbst_np.nn.loss import CrossEntropyLoss
from dfbst_np.nn.pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from dfbst_np.nn.residual import Residual
from dfbst_np.nn.shape import Flatten
from tests.helpers import rel_err
from tests.nn.parity import TOL, t64, torch

tnn = torch.nn


def build(p=0.5, dtype=np.float64):
    """A small nested network using every layer, in dfbst_np ..."""
    d = dtype
    return Sequential(
        Sequential(Conv2d(3, 4, 3, padding=1, dtype=d, rng=1), BatchNorm2d(4, dtype=d), ReLU(d),
                   MaxPool2d(2, dtype=d)),
        Sequential(Conv2d(4, 6, 3, stride=2, padding=1, bias=False, dtype=d, rng=2),
                   BatchNorm2d(6, weight_init=0.5, dtype=d), ReLU(d), AvgPool2d(1, dtype=d),
                   AdaptiveAvgPool2d(1, dtype=d)),
        Flatten(dtype=d),
        Sequential(Linear(6, 8, dtype=d, rng=3), BatchNorm1d(8, dtype=d), ReLU(d),
                   Dropout(p, rng=4, dtype=d), Linear(8, 3, dtype=d, rng=5)),
    )


def build_torch(p=0.5):
    """... and the same in torch.nn."""
    return tnn.Sequential(
        tnn.Sequential(tnn.Conv2d(3, 4, 3, padding=1), tnn.BatchNorm2d(4), tnn.ReLU(), tnn.MaxPool2d(2)),
        tnn.Sequential(tnn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False), tnn.BatchNorm2d(6),
                       tnn.ReLU(), tnn.AvgPool2d(1), tnn.AdaptiveAvgPool2d(1)),
        tnn.Flatten(),
        tnn.Sequential(tnn.Linear(6, 8), tnn.BatchNorm1d(8), tnn.ReLU(), tnn.Dropout(p), tnn.Linear(8, 3)),
    ).double()


def from_torch(tmodel):
    return {k: v.detach().numpy().copy() for k, v in tmodel.state_dict().items()}


# -- names ------------------------------------------------------------------------------
def test_names_and_order_match_torch():
    model, tmodel = build(), build_torch()
    sd, tsd = model.state_dict(), tmodel.state_dict()
    assert list(sd) == list(tsd)
    assert [v.shape for v in sd.values()] == [tuple(v.shape) for v in tsd.values()]
    assert list(model.params) == [k for k, _ in tmodel.named_parameters()]
    assert list(model.buffers) == [k for k, _ in tmodel.named_buffers()]
    assert [k for k, _ in model.named_modules()] == [k for k, _ in tmodel.named_modules()]
    assert all(m.name == k for k, m in model.named_modules())


def test_messages_use_the_dotted_name():
    model = build()
    with pytest.raises(FloatingPointError, match=r"^0\.0 \(Conv2d\): input contains NaN"):
        model.forward(np.full((2, 3, 8, 8), np.nan))
    with pytest.raises(ValueError, match=r"^0\.0 \(Conv2d\): expected size 3 on axis 1"):
        model.forward(np.zeros((2, 2, 8, 8)))


def test_a_module_moved_into_a_parent_is_renamed():
    layer = Linear(2, 2)
    assert layer.describe() == "Linear"
    outer = Sequential(Sequential(ReLU(), layer))
    assert layer.describe() == "0.1 (Linear)" and outer[0].name == "0"


# -- one training step and an evaluation against torch -----------------------------------
BIAS_BEFORE_BN = {"0.0.bias", "3.0.bias"}


@pytest.mark.parametrize("n", [2, 5])
def test_train_step_and_eval_match_torch(n, rng):
    model, tmodel = build(p=0.0), build_torch(p=0.0)
    model.load_state_dict(from_torch(tmodel))
    ce = CrossEntropyLoss(np.float64)
    for training in (True, True, False):
        model.train(training), tmodel.train(training)
        x, labels = rng.standard_normal((n, 3, 8, 8)), rng.integers(0, 3, n)
        loss = ce.forward(model.forward(x), labels)
        model.zero_grad()
        dx = model.backward(ce.backward())
        tx = t64(x, grad=True)
        tloss = tnn.functional.cross_entropy(tmodel(tx), torch.from_numpy(labels))
        tmodel.zero_grad()
        tloss.backward()
        assert abs(loss - tloss.item()) <= TOL * abs(tloss.item())
        assert rel_err(dx, tx.grad.numpy()) <= TOL
        tgrads = {k: p.grad.numpy() for k, p in tmodel.named_parameters()}
        assert set(model.grads) == set(tgrads)
        scale = max(np.abs(g).max() for g in tgrads.values())
        for k in tgrads:
            if k in BIAS_BEFORE_BN and training:
                # Batch statistics cancel a bias that feeds BN: both gradients are rounding noise.
                assert max(np.abs(model.grads[k]).max(), np.abs(tgrads[k]).max()) <= TOL * scale, k
            else:
                assert rel_err(model.grads[k], tgrads[k]) <= TOL, k
        sd, tsd = model.state_dict(), from_torch(tmodel)
        for k in tsd:
            assert rel_err(sd[k], tsd[k]) <= TOL, k


def test_grads_follow_parameter_order(rng):
    model = build(p=0.0)
    y = model.forward(rng.standard_normal((2, 3, 8, 8)))
    model.backward(np.ones_like(y))
    assert list(model.grads) == list(model.params)


# -- state dicts ------------------------------------------------------------------------
def test_state_dict_round_trip_and_copies(rng):
    model, other = build(), build()
    for v in model.params.values():
        v[...] = rng.standard_normal(v.shape)
    sd = model.state_dict()
    other.load_state_dict(sd)
    for k, v in other.state_dict().items():
        np.testing.assert_array_equal(v, sd[k])
    sd["0.0.weight"][...] = 0            # a copy: the model is untouched
    assert model.params["0.0.weight"].any()


def test_load_keeps_arrays_in_place_and_casts_like_copy_():
    model = build(dtype=np.float32)
    ref = model.params["3.0.weight"]
    state = from_torch(build_torch())                 # float64 arrays
    model.load_state_dict(state)
    assert model.params["3.0.weight"] is ref and ref.dtype == np.float32
    np.testing.assert_allclose(ref, state["3.0.weight"], rtol=1e-7)


def test_load_rejects_missing_and_unexpected_keys():
    model = build()
    state = model.state_dict()
    del state["3.1.running_var"]
    state["3.1.running_varr"] = np.ones(8)
    with pytest.raises(KeyError, match=r"missing keys \['3\.1\.running_var'\], "
                                       r"unexpected keys \['3\.1\.running_varr'\]"):
        model.load_state_dict(state)


def test_load_rejects_wrong_shapes():
    model = build()
    state = model.state_dict()
    state["0.0.weight"] = np.zeros((4, 3, 5, 5))
    with pytest.raises(ValueError, match=r"'0\.0\.weight' expected shape \(4, 3, 3, 3\), got \(4, 3, 5, 5\)"):
        model.load_state_dict(state)


# -- modes and gradients ----------------------------------------------------------------
def test_train_and_eval_propagate():
    model = build()
    assert model.eval() is model
    assert not any(m.training for m in model.modules())
    model[3].train()
    assert model[3][3].training and not model[0][1].training
    model.train()
    assert all(m.training for m in model.modules())


def test_zero_grad_empties_every_grad(rng):
    model = build()
    y = model.forward(rng.standard_normal((2, 3, 8, 8)))
    model.backward(np.ones_like(y))
    assert set(model.grads) == set(model.params)
    model.zero_grad()
    assert model.grads == {}
    assert all(m._grads == {} for m in model.modules())


# -- backward before forward --------------------------------------------------------------
LAYERS = [ReLU(), Flatten(), Dropout(), MaxPool2d(2), AvgPool2d(2), AdaptiveAvgPool2d(1),
          BatchNorm1d(3), BatchNorm2d(3), Residual(ReLU()), Linear(2, 2), Conv2d(1, 1, 1)]


@pytest.mark.parametrize("layer", LAYERS, ids=lambda m: type(m).__name__)
def test_backward_before_forward_is_a_clear_error(layer):
    with pytest.raises(RuntimeError, match="backward called before forward"):
        layer.backward(np.zeros((1, 1), np.float32))


def test_module_base_is_importable_from_the_package():
    assert issubclass(Sequential, Module)
