"""A method defined outside the package, in this one file: static sparse training.

"Static sparse training" keeps a fixed random mask per layer for the whole
run (each layer keeps a fraction ``DENSITY`` of its weights, drawn with the
layer's rng when the model is set up) and trains the kept weights only: the
weight gradient is computed on the mask's support (the "mask" mode, a
sampled product in the fast implementation). It exercises the hooks a
comparison method needs, without changing a layer or the Trainer:

* ``setup``: a stored boolean mask per layer, from the layer's rng;
* ``forward_mask`` (each implementation's form) and the "mask" weight gradient;
* ``after_update``: pruned weights and their momentum set exactly to 0
  (``optimizer.zero_entries``);
* ``layer_cost``: the weight gradient paid on nnz(M) entries only;
* ``state_dict`` / ``load_state_dict``: the masks saved and restored.

What is proven: registered, it trains LeNet-300-100 and LeNet-5 through the
Trainer with both implementations, which agree to 1e-10 (float64) after
every step; weights off the mask and their momentum stay exactly 0; the
forward density is DENSITY; the ledger counts the weight gradient on M; the
masks survive a checkpoint round trip; a second registration of the name is
refused.
"""
import numpy as np
import pytest

import dfbst_np as dn
from dfbst_np import methods
from dfbst_np.methods.base import Implementation, Method
from dfbst_np.methods.fast import FastRule
from dfbst_np.methods.textbook_rule import TextbookRule
from dfbst_np.models import build
from dfbst_np.sparse.ledger import LayerCost
from dfbst_np.sparse.mask_rule import ForwardMask
from dfbst_np.sparse.masked import masked_layers
from tests.helpers import rel_err

DENSITY = 0.2
NAME = "static_test"


class StaticHooks:
    """What both implementations share: the mask's life cycle."""

    def default_weight_grad(self, settings):
        return "mask"

    def new_state(self, layer):
        state = super().new_state(layer)
        state.keep = None
        return state

    def setup(self, layers):
        for _, layer in layers:
            if layer.state.keep is None:
                layer.state.keep = layer.rng.random(layer.weight2d.shape) < DENSITY
                layer.weight2d[~layer.state.keep] = 0

    def after_update(self, trainer, info):
        for name, layer in trainer.layers:
            off = ~layer.state.keep
            layer.weight2d[off] = 0
            trainer.optimizer.zero_entries(f"{name}.weight", off.reshape(layer.weight.shape))

    def layer_cost(self, name, layer):
        nnz = int(layer.state.keep.sum())
        return LayerCost(name=name, n=layer.rows, numel=layer.weight.size, nnz_m=nnz, nnz_d=nnz,
                         nnz_exact=nnz)

    def state_dict(self, trainer):
        return {f"keep.{name}": layer.state.keep.copy() for name, layer in trainer.layers}

    def load_state_dict(self, trainer, arrays):
        for name, layer in trainer.layers:
            layer.state.keep = arrays[f"keep.{name}"].copy()


class FastStatic(StaticHooks, FastRule):
    def forward_mask(self, layer, w2):
        keep = layer.state.keep
        return ForwardMask(keep=keep, absw=np.abs(w2), tau=np.zeros(w2.shape[0], w2.dtype),
                           reset=False)

    def mask_inputs(self, layer):
        return (layer.state.keep,)


class TextbookStatic(StaticHooks, TextbookRule):
    def forward_mask(self, layer, W):
        return layer.state.keep.astype(W.dtype)


STATIC = Method(NAME, paper="a fixed random mask (static sparse training), for this test",
                fast=FastStatic(), textbook=TextbookStatic(), defaults=dict(alpha=0.0, beta=0.0))


@pytest.fixture(scope="module", autouse=True)
def registered():
    if NAME not in methods.names():
        methods.register(STATIC)
    yield


def test_registered_and_refused_twice():
    assert methods.names()[:3] == ("dense", "dst", "dfbst") and NAME in methods.names()
    assert methods.get(NAME) is STATIC
    with pytest.raises(ValueError, match="already registered"):
        methods.register(STATIC)
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        methods.get("nope")
    with pytest.raises(TypeError, match="Method"):
        methods.register(FastStatic())


SHAPES = {"lenet300_100": (1, 28, 28), "lenet_5": (1, 28, 28)}


@pytest.mark.parametrize("name", ["lenet300_100", "lenet_5"])
def test_trains_through_the_trainer_with_both_implementations(name):
    rng = np.random.default_rng(0)
    pair = []
    for textbook in (False, True):
        model = build(name, method=NAME, dtype=np.float64, rng=np.random.default_rng(1),
                      textbook=textbook)
        pair.append((model, dn.Trainer(model, lr=0.05, alpha=0.0, beta=0.0)))
    (m_f, t_f), (m_t, t_t) = pair
    assert t_f.impl is STATIC.fast and t_t.impl is STATIC.textbook
    schedule = [(e, i) for e in (1, 2) for i in range(3)]
    for epoch, index in schedule:
        x, y = rng.random((8,) + SHAPES[name]), rng.integers(0, 10, 8)
        s_f = t_f.step(x, y, epoch=epoch, index=index)
        s_t = t_t.step(x, y, epoch=epoch, index=index)
        assert rel_err(s_t.loss, s_f.loss) <= 1e-10
        for key, p in m_f.params.items():
            assert rel_err(m_t.params[key], p) <= 1e-10, (epoch, index, key)
        for (n, lf), (_, lt) in zip(masked_layers(m_f), masked_layers(m_t)):
            keep = lf.state.keep
            np.testing.assert_array_equal(keep, lt.state.keep)
            np.testing.assert_array_equal(lf.mask != 0, keep.reshape(lf.weight.shape))
            assert lf.last_weight_grad == lt.last_weight_grad == "mask"
            assert not lf.loss_grad().full              # the fast one computed M's entries only
            for m, t in ((m_f, t_f), (m_t, t_t)):
                w = m.params[f"{n}.weight"].reshape(keep.shape)
                buf = t.optimizer.state_dict()[f"momentum_buffer.{n}.weight"].reshape(keep.shape)
                assert not w[~keep].any() and not buf[~keep].any()      # exactly 0
                assert w[keep].all()
        assert abs(np.mean(list(s_f.density.values())) - DENSITY) < 0.05
        paid = sum(2 * l.rows * int(l.state.keep.sum()) for _, l in masked_layers(m_f))
        assert s_f.cost.weight_grad_flops_ideal == s_f.cost.weight_grad_flops_exact == paid
        assert s_t.cost == s_f.cost
    # the masks are the method's state: a checkpoint round trip restores them
    saved = t_f.state_dict()
    model = build(name, method=NAME, dtype=np.float64, rng=np.random.default_rng(99))
    trainer = dn.Trainer(model)
    trainer.load_state_dict(saved)
    for (_, a), (_, b) in zip(masked_layers(m_f), masked_layers(model)):
        np.testing.assert_array_equal(a.state.keep, b.state.keep)


def test_implementations_are_objects_with_one_owner():
    with pytest.raises(ValueError, match="already belongs"):
        Method("other", paper="-", fast=STATIC.fast, textbook=TextbookStatic())
    with pytest.raises(TypeError, match="Implementation"):
        Method("other", paper="-", fast=object(), textbook=TextbookStatic())
    assert isinstance(STATIC.fast, Implementation) and STATIC.implementation("textbook").kind == "textbook"
