"""Every hook's two implementations agree (float64, 1e-12 relative), over the grid
of tests/sparse/test_fast_equals_textbook.py.

The layer hooks (forward, backward, mask) are checked case by case against
the textbook functions there, for both implementations. Here the trainer
hooks are: for each method, kernel path, float32 masks off and on, and
forward density (0 %: the reset fires, to 100 %), the three layers of that
grid (a linear layer and two convolutions) form one "model"; each
implementation runs its layers' forward and backward on the same batch and
then its trainer hooks in the Trainer's order: ``alpha_term`` (value and
dt), ``gradient_mask`` (the used gradients, D bit for bit), ``statistic``
(V), ``beta_term`` on a step that has it (value and du), ``layer_cost``
(equal counts) and ``state_dict``. The fast results must equal the
textbook's. The run also checks the cases do what they claim (the penalty,
D dropping entries, the beta term).
"""
from types import SimpleNamespace

import numpy as np
import pytest

from dfbst_np import methods
from dfbst_np.methods import StepInfo
from tests.helpers import rel_err
from tests.sparse.test_fast_equals_textbook import DENSITIES, LAYERS, build, set_density

TOL = 1e-12
GRID = [(method, path, f32, density) for method in ("dense", "dst", "dfbst")
        for path in ("dense", "sparse", "auto") for f32 in (False, True) for density in DENSITIES
        if method != "dense" or (not f32 and density == 1.0)]


def run_hooks(impl, method, path, f32, density):
    """One step's layer and trainer hooks with ``impl``'s layers; what each returned."""
    rng = np.random.default_rng(5)
    layers = []
    for kind in LAYERS:
        layer, x_shape = build(kind, method, path, f32, impl=impl)
        set_density(layer, method, density, rng)
        if method == "dfbst":
            layer.params["dthreshold"][...] = 0.5 / layer.weight2d.shape[1]
        x = rng.standard_normal(x_shape)
        dy = rng.standard_normal(layer.output_shape(x_shape) if kind != "linear"
                                 else (x_shape[0], layer.out_features))
        layer.next_step(deferred=True)
        layer.forward(x)
        layer.backward(dy)
        layers.append((kind, layer))
    hooks = layers[0][1].impl
    trainer = SimpleNamespace(layers=layers, alpha=5e-3, beta=0.1,
                              method_state=hooks.new_run_state())
    out = {"alpha": hooks.alpha_term(trainer)}
    used = hooks.gradient_mask(trainer)
    out["used"] = None if used is None else {k: g.dense() for k, g in used.items()}
    out["V"] = hooks.statistic(trainer)
    out["beta"] = hooks.beta_term(trainer, StepInfo(epoch=2, index=1, step=5, total=None))
    out["no beta at index 0"] = hooks.beta_term(trainer, StepInfo(epoch=2, index=0, step=4, total=None))
    out["grads"] = {f"{k}.{p}": np.array(g) for k, l in layers for p, g in l.grads.items()}
    out["dW"] = {k: l.loss_grad().dense() for k, l in layers}
    out["D"] = {k: l.dmask for k, l in layers}
    out["cost"] = [hooks.layer_cost(k, l).as_dict() for k, l in layers]
    out["state"] = hooks.state_dict(trainer)
    return out


def assert_close(a, b, where):
    if a is None or b is None:
        assert a is None and b is None, where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_close(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, list):
        for k, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f"{where}/{k}")
    else:
        assert rel_err(np.asarray(a, float), np.asarray(b, float)) <= TOL, where


@pytest.mark.parametrize("method,path,f32,density", GRID)
def test_trainer_hooks_fast_equal_textbook(method, path, f32, density):
    fast = run_hooks("fast", method, path, f32, density)
    book = run_hooks("textbook", method, path, f32, density)
    for key in fast:
        if key == "D":
            for k in fast["D"]:
                if fast["D"][k] is None:
                    assert book["D"][k] is None
                else:
                    np.testing.assert_array_equal(fast["D"][k], book["D"][k])
        elif key == "cost":
            assert fast["cost"] == book["cost"]
        else:
            assert_close(fast[key], book[key], key)
    # the case does what it claims
    spec = methods.get(method)
    assert (fast["alpha"] > 0) == ("threshold" in spec.params)
    if method == "dfbst":
        assert fast["beta"] > 0 and fast["V"] > 0 and fast["no beta at index 0"] == 0
        assert any(d.mean() < 1 for d in fast["D"].values())
        assert all(f"{k}.dthreshold" in fast["grads"] for k in LAYERS)
    else:
        assert fast["used"] is None and fast["V"] is None and fast["beta"] == 0
