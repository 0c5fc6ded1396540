"""The accelerated mode (``weight_grad="predicted"``) against the exact mode.

What is proven (float64, 1e-12 relative unless bit-exact is stated):

* with a full predicted support (the previous D set to all ones before each
  step) a predicted Trainer step equals the exact one: every parameter,
  gradient, mask M and D and the statistics (loss, V, gradient norm) after
  each of several steps, for LeNet-300-100 and LeNet-5, over epochs 1 and 2
  (so u's gradient from V is used), on the sparse, dense and automatic
  kernel paths;
* with a partial support the predicted step does what its docstring says:
  the layer computes dW only on S = M | D_prev (zero elsewhere; the entries
  on S are the exact rule's up to the summation order of A), dt sums over
  S, and the new D lies inside S;
* the first step of a layer (no previous D) is the exact step;
* the mode is refused where it makes no sense (no backward mask).
"""
import numpy as np
import pytest

from dfbst_np import models
from dfbst_np import textbook as tb
from dfbst_np.sparse.masked import MaskedLinear, masked_layers
from dfbst_np.train.trainer import Trainer
from tests.helpers import rel_err

TOL = 1e-12
SHAPES = {"lenet300_100": (1, 28, 28), "lenet_5": (1, 28, 28)}


def set_densities(model, density, rng):
    """Thresholds that keep about ``density`` of every row (dfbst masks with |t|)."""
    for _, layer in masked_layers(model):
        w2 = np.abs(layer.weight2d)
        layer.params["threshold"][...] = -np.quantile(w2, 1 - density, axis=1)


def run_pair(name, path, steps, full_support, clip_norm=1.0):
    rng = np.random.default_rng(0)
    built = []
    for mode in ("exact", "predicted"):
        m = models.build(name, method="dfbst", dtype=np.float64, kernel_path=path,
                         rng=np.random.default_rng(1), weight_grad=mode)
        set_densities(m, 0.3, np.random.default_rng(2))
        built.append((m, Trainer(m, milestones=(5,), clip_norm=clip_norm)))
    (m_e, t_e), (m_p, t_p) = built
    data = [(rng.random((8,) + SHAPES[name]), rng.integers(0, 10, 8)) for _ in range(steps)]
    sched = [(1 + k // 2, k % 2 + (k // 2 > 0)) for k in range(steps)]   # epoch 2 steps use V
    for k, ((x, y), (epoch, index)) in enumerate(zip(data, sched)):
        if full_support:
            for _, layer in masked_layers(m_p):
                layer.dmask = np.ones(layer.weight.shape)
        s_e = t_e.step(x, y, epoch=epoch, index=index)
        s_p = t_p.step(x, y, epoch=epoch, index=index)
        yield k, (m_e, s_e), (m_p, s_p)


@pytest.mark.parametrize("path", ["sparse", "dense", "auto"])
@pytest.mark.parametrize("name", list(SHAPES))
def test_full_predicted_support_equals_exact(name, path):
    used_beta = False
    for k, (m_e, s_e), (m_p, s_p) in run_pair(name, path, 4, full_support=True):
        for key in ("loss", "ce", "alpha_term", "beta_term", "grad_norm", "V"):
            assert rel_err(getattr(s_p, key), getattr(s_e, key)) <= TOL, (k, key)
        used_beta |= s_e.beta_term > 0
        assert s_p.density == s_e.density and s_p.bdensity == s_e.bdensity
        params_e, params_p = m_e.params, m_p.params
        for key in params_e:
            assert rel_err(params_p[key], params_e[key]) <= TOL, (k, key)
        for (n, le), (_, lp) in zip(masked_layers(m_e), masked_layers(m_p)):
            assert lp.last_weight_grad == "predicted" and le.last_weight_grad == "exact"
            np.testing.assert_array_equal(lp.mask, le.mask)
            np.testing.assert_array_equal(lp.dmask, le.dmask)
            for key in le.grads:
                assert rel_err(lp.grads[key], le.grads[key]) <= TOL, (k, n, key)
    assert used_beta


def test_predicted_step_clips_the_support_values_as_the_dense_gradient():
    """The trainer takes the norm of a predicted gradient and clips it on the support's
    values only (dW * D is 0 elsewhere) and writes the dense gradient afterwards: with
    clipping active the result equals the exact step's, and the written gradients
    have the clipped norm."""
    clip = 1e-3
    for k, (m_e, s_e), (m_p, s_p) in run_pair("lenet300_100", "auto", 3, True, clip_norm=clip):
        assert s_e.grad_norm > 10 * clip                          # clipping is active
        assert rel_err(s_p.grad_norm, s_e.grad_norm) <= TOL
        for key, g in m_e.grads.items():
            assert rel_err(m_p.grads[key], g) <= TOL, (k, key)
        for key, p in m_e.params.items():
            assert rel_err(m_p.params[key], p) <= TOL, (k, key)
    # a partial support: the dense gradients written after the step carry the clipped norm
    for k, _, (m_p, s_p) in run_pair("lenet300_100", "auto", 3, False, clip_norm=clip):
        norm = np.sqrt(sum(float(np.sum(g * g)) for g in m_p.grads.values()))
        expected = s_p.grad_norm * clip / (s_p.grad_norm + 1e-6)
        assert s_p.grad_norm > 10 * clip and rel_err(norm, expected) <= 1e-12, k
        modes = {layer.last_weight_grad for _, layer in masked_layers(m_p)}
        assert modes == ({"exact"} if k == 0 else {"predicted"})


def test_partial_support_is_what_the_docstring_says():
    rng = np.random.default_rng(5)
    layer = MaskedLinear(50, 20, method="dfbst", dtype=np.float64, weight_grad="predicted",
                         rng=rng, kernel_path="sparse")
    layer.params["threshold"][...] = 0.08
    x = rng.standard_normal((6, 50))
    dy = rng.standard_normal((6, 20))
    layer.forward(x)
    layer.backward(dy)
    assert layer.last_weight_grad == "exact"        # no previous D: the exact step
    exact_dW = layer.grads["weight"].copy()
    prev = rng.random((20, 50)) < 0.1
    layer.dmask = prev.astype(np.float64)
    layer.forward(x)
    layer.backward(dy)
    assert layer.last_weight_grad == "predicted"
    S = (layer.mask != 0) | prev
    dW = layer.grads["weight"]
    assert not dW[~S].any()
    assert rel_err(dW[S], exact_dW[S]) <= TOL                   # the same rule on S
    # dt sums over S only
    w, t = layer.weight, layer.params["threshold"]
    _, dt_on_S = tb.layer_grads(np.where(S, dy.T @ x, 0.0), w, t, layer.mask, "dfbst")
    assert rel_err(layer.grads["threshold"], dt_on_S) <= TOL
    # the trainer's D lies inside S
    model_rng = np.random.default_rng(6)
    m = models.build("lenet300_100", method="dfbst", dtype=np.float64, rng=model_rng,
                     weight_grad="predicted")
    set_densities(m, 0.1, model_rng)
    tr = Trainer(m, weight_grad="predicted")
    xb, yb = model_rng.random((8, 1, 28, 28)), model_rng.integers(0, 10, 8)
    tr.step(xb, yb, epoch=1, index=0)
    for _, l in masked_layers(m):
        assert l.last_weight_grad == "exact"
        l.params["dthreshold"][...] = 0.002                     # a D sparser than dW
    tr.step(xb, yb, epoch=1, index=1)
    prev = {n: l.dmask.copy() for n, l in masked_layers(m)}
    tr.step(xb, yb, epoch=1, index=2)
    for n, l in masked_layers(m):
        assert l.last_weight_grad == "predicted"
        S = (l.mask != 0) | (prev[n] != 0)
        assert not l.dmask[~S].any() and 0 < l.dmask.mean() < S.mean()


def test_predicted_needs_dfbst():
    with pytest.raises(ValueError, match="predicted.*dst"):
        MaskedLinear(4, 3, method="dst", weight_grad="predicted")
    with pytest.raises(ValueError, match="weight_grad"):
        MaskedLinear(4, 3, weight_grad="fast")
    with pytest.raises(ValueError, match="predicted.*dst"):
        models.build("lenet300_100", method="dst", weight_grad="predicted")
    m = models.build("lenet300_100", method="dfbst")
    with pytest.raises(ValueError, match="models.build"):      # chosen when the model is built
        Trainer(m, weight_grad="predicted")
    m = models.build("lenet300_100", method="dfbst", weight_grad="predicted")
    assert all(layer.weight_grad == "predicted" for _, layer in masked_layers(m))


def test_predicted_run_resumes_exactly(tmp_path):
    """A predicted run killed after an epoch and resumed ends as the uninterrupted one:
    the checkpoint's D is the next step's predicted support (run.py restores it)."""
    from dfbst_np.train.config import default_config
    from dfbst_np.train.run import Run, load_data
    cfg = default_config("lenet300_100", "dfbst", dataset="sample", epochs=2, train_limit=320,
                         test_limit=100, dtype="float64", weight_grad="predicted")
    data = load_data(cfg)
    full = Run(cfg, tmp_path / "full", data=data)
    full.train(progress=False, log=lambda s: None)
    first = dict(vars(cfg))
    first["epochs"] = 1
    half = Run(type(cfg)(**first), tmp_path / "half", data=data)
    half.train(progress=False, log=lambda s: None)
    resumed = Run.resume(tmp_path / "half", data=data)
    resumed.cfg.epochs = 2
    assert all(layer.dmask is not None for _, layer in masked_layers(resumed.model))
    resumed.train(progress=False, log=lambda s: None)
    for _, layer in masked_layers(resumed.model):
        assert layer.last_weight_grad == "predicted"
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
