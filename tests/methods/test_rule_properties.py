"""The rules ask the method object, never its name; model-wide settings agree.

What is proven:

* the built-in methods declare the properties the shared rules read
  (``masked``, ``threshold_mask``, ``abs_threshold``, ``learns_backward_mask``)
  and a Method declaring an impossible combination is refused;
* an unregistered Method with DFBST's properties under another name gets
  DFBST's numbers from the textbook and the fast rules (mask, reset, dW, dt),
  and one with DST's gets DST's: the rules read the properties, not the name;
  a name and its Method object give the same numbers; a masked method without
  the threshold rule is refused by the textbook's threshold functions;
* the reset density and the threshold penalty are defined once (the fast
  path and the PyTorch reference use the textbook's), and the fast
  ``effective_threshold`` returns tau as the vector its callers use;
* the Trainer refuses a model whose layers hold different settings, naming
  the first layer that differs and the setting, and accepts equal settings
  held in different objects; a layer's backward density is 1.0 without a
  backward mask and nnz(D) / numel with one.
"""
import numpy as np
import pytest

import dfbst_np as dn
from dfbst_np import methods
from dfbst_np import textbook as tb
from dfbst_np.methods.dfbst import FastDFBST, TextbookDFBST
from dfbst_np.methods.thresholds import FastThresholds, TextbookThresholds
from dfbst_np.models import build
from dfbst_np.sparse import mask_rule
from dfbst_np.sparse.entries import Entries
from dfbst_np.sparse.masked import MaskedLinear
from tests.helpers import rel_err


def test_builtin_properties():
    props = {name: (m.masked, m.threshold_mask, m.abs_threshold, m.learns_backward_mask)
             for name, m in ((n, methods.get(n)) for n in methods.names()[:6])}
    assert props == {"dense": (False, False, False, False), "dst": (True, True, False, False),
                     "dfbst": (True, True, True, True), "gmp": (True, False, False, False),
                     "set": (True, False, False, False), "rigl": (True, False, False, False)}
    assert methods.get(methods.get("dst")) is methods.get("dst")      # a Method is its own lookup


@pytest.mark.parametrize("kwargs,needs", [
    (dict(abs_threshold=True, threshold_mask=False, params=("threshold",)),
     "abs_threshold=True needs threshold_mask"),
    (dict(threshold_mask=True, params=()), "threshold_mask=True needs parameter 'threshold'"),
    (dict(threshold_mask=True, params=("threshold",), masked=False),
     "threshold_mask=True needs masked=True"),
    (dict(learns_backward_mask=True, params=("threshold",)),
     "learns_backward_mask=True needs parameter 'dthreshold'"),
])
def test_impossible_properties_are_refused(kwargs, needs):
    fast, book = FastThresholds(), TextbookThresholds()
    with pytest.raises(ValueError, match=f"Method 'odd': {needs}"):
        methods.Method("odd", "nobody", fast=fast, textbook=book, **kwargs)
    assert fast.method is None and book.method is None       # left free for a Method that is right


def twin_of(name):
    """An unregistered Method with the properties of ``name`` (dst or dfbst) under another name."""
    fast, book = (FastDFBST(), TextbookDFBST()) if name == "dfbst" else (FastThresholds(), TextbookThresholds())
    ref = methods.get(name)
    return methods.Method(f"renamed_{name}", "nobody", fast=fast, textbook=book, params=ref.params,
                          threshold_mask=True, abs_threshold=ref.abs_threshold,
                          learns_backward_mask=ref.learns_backward_mask)


@pytest.mark.parametrize("name", ["dst", "dfbst"])
@pytest.mark.parametrize("reset", [False, True])
def test_rules_read_properties_not_names(name, reset):
    rng = np.random.default_rng(11)
    W = rng.standard_normal((6, 20))
    t = rng.choice([-1.0, 1.0], 6) * rng.uniform(0.2, 0.9, 6)        # mixed signs: |t| matters
    if reset:
        t = np.full(6, 10.0)                                         # keeps nothing: the reset fires
    A = rng.standard_normal(W.shape)
    other = "dst" if name == "dfbst" else "dfbst"
    results = {}
    for key, method in (("name", name), ("object", methods.get(name)), ("twin", twin_of(name)),
                        ("other", other)):
        M, t_new = tb.forward_mask(W, t, method)
        dW, dt = tb.layer_grads(A, W, t_new, M, method)
        t_fast = t.copy()
        fm = mask_rule.forward_mask(W, t_fast, method)
        fdW, fdt = mask_rule.layer_grads(Entries(A.copy()), W, t_fast, fm, method)
        assert np.array_equal(fm.M, M) and np.array_equal(t_fast, t_new), key
        assert rel_err(fdW.dense(), dW) <= 1e-12 and rel_err(fdt, dt) <= 1e-12, key
        results[key] = (M, t_new, dW, dt)
    for key in ("object", "twin"):
        for a, b in zip(results[key], results["name"]):
            assert np.array_equal(a, b), key
    if not reset:          # negative thresholds: tau = t and tau = |t| give different masks and dt
        assert not np.array_equal(results["other"][0], results["name"][0])
        assert not np.allclose(results["other"][3], results["name"][3])
    else:                  # the reset left t = 0, where the two rules agree
        assert np.all(results["name"][1] == 0)


def test_the_textbook_refuses_a_mask_without_thresholds():
    W, t = np.ones((2, 3)), np.zeros(2)
    for name in ("gmp", "set", "rigl"):
        with pytest.raises(ValueError, match=f"method '{name}' has no threshold mask"):
            tb.forward_mask(W, t, name)
        with pytest.raises(ValueError, match="no threshold mask"):
            tb.effective_threshold(t, name)
    M, t_new = tb.forward_mask(W, None, methods.get("dense"))
    assert np.array_equal(M, np.ones_like(W)) and t_new is None
    with pytest.raises(ValueError, match="unknown method 'dfbts'"):
        tb.forward_mask(W, t, "dfbts")


def test_one_definition_each():
    assert mask_rule.RESET_DENSITY is tb.RESET_DENSITY == 0.01
    assert mask_rule.threshold_penalty is tb.threshold_penalty
    pytest.importorskip("torch")
    from dfbst_np.reference import layers as ref_layers
    assert ref_layers.RESET_DENSITY is tb.RESET_DENSITY
    assert ref_layers.METHODS == ("dense", "dst", "dfbst")     # what the reference implements


def test_fast_effective_threshold_is_the_vector_tau():
    t = np.array([-0.5, 0.25, 0.0])
    tau = mask_rule.effective_threshold(t, "dfbst", np.float32)
    assert tau.shape == (3,) and tau.dtype == np.float32 and tau.flags.c_contiguous
    assert np.array_equal(tau, np.float32([0.5, 0.25, 0.0]))
    assert np.array_equal(mask_rule.effective_threshold(t, "dst"), t)
    assert np.array_equal(tau, tb.effective_threshold(t, "dfbst").astype(np.float32))


@pytest.mark.parametrize("setting,value", [("float32_masks", True), ("estimator", "identity"),
                                           ("weight_grad", "predicted")])
def test_trainer_refuses_layers_that_disagree(setting, value):
    model = build("lenet300_100", method="dfbst", dtype=np.float64)
    model.fc3 = MaskedLinear(100, 10, method="dfbst", dtype=np.float64, **{setting: value})
    with pytest.raises(ValueError) as err:
        dn.Trainer(model)
    message = str(err.value)
    assert f"layer 'fc3' has {setting}={value!r}" in message
    default = getattr(methods.Settings(), setting)
    assert f"layer 'fc1' has {setting}={default!r}" in message and "model-wide" in message


def test_equal_settings_in_different_objects_are_accepted_and_bdensity():
    model = build("lenet300_100", method="dfbst", dtype=np.float64, rng=np.random.default_rng(0))
    model.fc3 = MaskedLinear(100, 10, method="dfbst", dtype=np.float64, rng=np.random.default_rng(1))
    assert model.fc3.settings is not model.fc1.settings and model.fc3.settings == model.fc1.settings
    tr = dn.Trainer(model)
    assert tr.settings == methods.Settings()
    assert model.fc1.bdensity == 1.0                                  # no backward mask yet
    rng = np.random.default_rng(2)
    x, y = rng.random((8, 1, 28, 28)), rng.integers(0, 10, 8)
    stats = tr.step(x, y, epoch=1, index=0)
    for name, layer in tr.layers:
        assert layer.dmask_nnz is not None
        assert layer.bdensity == layer.dmask_nnz / layer.weight.size == stats.bdensity[name]
    assert any(layer.bdensity < 1.0 for _, layer in tr.layers)         # D dropped entries
