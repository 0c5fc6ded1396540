"""The method registry (SPEC section 8) and implementation objects.

What is proven: the built-in methods are registered in order with their
papers, defaults and parameters; unknown names and wrong types are refused
with messages naming what was expected; a layer and a model get the
implementation object they are given (by kind, or an object wrapping one,
as a benchmark that times the hooks passes), the Trainer uses the one its
model's layers share and refuses a model that mixes them; a wrapped
implementation trains to the same numbers as the one it wraps.
"""
import numpy as np
import pytest

import dfbst_np as dn
from dfbst_np import methods
from dfbst_np.models import build
from dfbst_np.sparse.masked import MaskedLinear, masked_layers
from dfbst_np.train.config import default_config


def test_builtin_methods():
    assert methods.names()[:3] == ("dense", "dst", "dfbst")
    assert methods.get("dfbst").params == ("threshold", "dthreshold")
    assert methods.get("dst").params == ("threshold",) and methods.get("dense").params == ()
    assert "Pote" in methods.get("dfbst").paper and "Liu" in methods.get("dst").paper
    assert methods.get("dfbst").weight_grads == ("exact", "predicted")
    # the reference settings are the method's, and the run config takes them
    cfg = default_config("lenet300_100", "dst")
    for key, value in methods.get("dst").defaults.items():
        assert getattr(cfg, key) == value
    assert (cfg.lr, cfg.alpha, cfg.clip_norm) == (0.01, 5e-4, None)
    assert default_config("lenet300_100", "dfbst").lr == 0.1


def test_bad_names_and_types():
    with pytest.raises(ValueError, match=r"unknown method 'rigl2'; expected one of \('dense'"):
        methods.get("rigl2")
    with pytest.raises(ValueError, match="unknown method"):
        MaskedLinear(3, 2, method="nope")
    with pytest.raises(ValueError, match="unknown implementation 'slow'"):
        MaskedLinear(3, 2, method="dst", impl="slow")
    with pytest.raises(TypeError, match="method name, a Method or an Implementation"):
        methods.implementation(3.0)
    with pytest.raises(ValueError, match="already registered"):
        methods.register(methods.get("dst"))
    with pytest.raises(TypeError, match="Settings"):
        MaskedLinear(3, 2, settings={"estimator": "long_tailed"})
    with pytest.raises(ValueError, match="unknown estimator"):
        methods.Settings(estimator="tanh")


def test_layers_are_told_at_construction():
    fast = MaskedLinear(3, 2, method="dfbst")
    book = MaskedLinear(3, 2, method="dfbst", impl="textbook")
    assert fast.impl is methods.get("dfbst").fast and book.impl is methods.get("dfbst").textbook
    model = build("lenet300_100", method="dst", textbook=True)
    impls = {id(l.impl) for _, l in masked_layers(model)}
    settings = {id(l.settings) for _, l in masked_layers(model)}
    assert impls == {id(methods.get("dst").textbook)} and len(settings) == 1   # one shared object
    with pytest.raises(AttributeError):
        fast.settings.float32_masks = True                                       # frozen
    with pytest.raises(AttributeError):
        fast.float32_masks = True              # read from the settings, never set on a layer
    mixed = build("lenet300_100", method="dst")
    mixed.fc2 = MaskedLinear(300, 100, method="dst", impl="textbook")
    with pytest.raises(ValueError, match="different implementations"):
        dn.Trainer(mixed)


class Counting:
    """Wraps an implementation and counts the hook calls (as a timer would)."""

    def __init__(self, inner):
        self.inner, self.calls = inner, {}

    def __getattr__(self, name):
        value = getattr(self.inner, name)
        if not callable(value):
            return value

        def counted(*args, **kwargs):
            self.calls[name] = self.calls.get(name, 0) + 1
            return value(*args, **kwargs)
        return counted


def test_a_wrapped_implementation_trains_to_the_same_numbers():
    rng = np.random.default_rng(0)
    x, y = rng.random((8, 1, 28, 28)), rng.integers(0, 10, 8)
    wrapped = Counting(methods.get("dfbst").fast)
    plain = build("lenet300_100", method="dfbst", dtype=np.float64)
    timed = build("lenet300_100", method=wrapped, dtype=np.float64)
    t_plain, t_timed = dn.Trainer(plain), dn.Trainer(timed)
    assert t_timed.impl is wrapped and t_timed.method == "dfbst"
    for epoch, index in [(1, 0), (1, 1), (2, 0), (2, 1)]:
        t_plain.step(x, y, epoch=epoch, index=index)
        t_timed.step(x, y, epoch=epoch, index=index)
    for key, p in plain.params.items():
        np.testing.assert_array_equal(timed.params[key], p)
    assert wrapped.calls["forward"] == wrapped.calls["backward"] == 3 * 4
    assert wrapped.calls["gradient_mask"] == 4 and wrapped.calls["beta_term"] == 4
