"""Trainer(textbook=True) runs the rule through dfbst_np.textbook and gives the default trainer's numbers.

What is proven (float64): after every step of 3 epochs x 3 batches, every
parameter and momentum buffer of a textbook trainer equals the default
(fast) trainer's to 1e-10 relative, and the masks M and D are identical, for
LeNet-300-100 and LeNet-5, dst and dfbst, float32 masks off and on; VGG-16
and ResNet-18 (32x32 inputs, batch 2) the same over 2 steps in 2 epochs, so
that the beta term fires. The runs start from thresholds that keep about
30 % of each row (signs mixed for dfbst) and u that drops entries, so M, D,
the beta term and the penalty all act; the test checks that they did.
The textbook trainer refuses what has no textbook form.
"""
import numpy as np
import pytest

import dfbst_np as dn
from dfbst_np.models import build
from dfbst_np.sparse.masked import masked_layers
from tests.helpers import rel_err

TOL = 1e-10
SHAPES = {"lenet300_100": (1, 28, 28), "lenet_5": (1, 28, 28), "vgg16": (3, 32, 32),
          "resnet18": (3, 32, 32)}


def start(model, method, rng):
    """Thresholds keeping ~30 % of each row; u dropping the smaller half of |Ghat|."""
    for _, layer in masked_layers(model):
        q = np.quantile(np.abs(layer.weight2d), 0.7, axis=1)
        sign = rng.choice([-1.0, 1.0], size=q.size) if method == "dfbst" else 1.0
        layer.params["threshold"][...] = sign * q
        if method == "dfbst":
            layer.params["dthreshold"][...] = 0.5 / layer.weight2d.shape[1]


def run_pair(name, method, float32_masks, schedule, batch):
    rng = np.random.default_rng(0)
    pair = []
    for textbook in (False, True):
        model = build(name, method=method, dtype=np.float64, float32_masks=float32_masks,
                      rng=np.random.default_rng(1), textbook=textbook)
        start(model, method, np.random.default_rng(2))
        pair.append((model, dn.Trainer(model, textbook=textbook)))
    data = [(rng.random((batch,) + SHAPES[name]), rng.integers(0, 10, batch)) for _ in schedule]
    epoch_now = schedule[0][0]
    seen = {"beta": False, "clip": False, "D dropped": False, "reset": False}
    for (x, y), (epoch, index) in zip(data, schedule):
        if epoch != epoch_now:
            for _, trainer in pair:
                trainer.end_epoch()
            epoch_now = epoch
        (m_f, t_f), (m_t, t_t) = pair
        s_f = t_f.step(x, y, epoch=epoch, index=index)
        s_t = t_t.step(x, y, epoch=epoch, index=index)
        for key in ("loss", "ce", "alpha_term", "beta_term", "grad_norm"):
            assert rel_err(getattr(s_t, key), getattr(s_f, key)) <= TOL, (epoch, index, key)
        for key, p in m_f.params.items():
            assert rel_err(m_t.params[key], p) <= TOL, (epoch, index, key)
        buf_f, buf_t = t_f.optimizer.state_dict(), t_t.optimizer.state_dict()
        for key in buf_f:
            assert rel_err(buf_t[key], buf_f[key]) <= TOL, (epoch, index, key)
        for (n, lf), (_, lt) in zip(masked_layers(m_f), masked_layers(m_t)):
            np.testing.assert_array_equal(lt.mask, lf.mask, err_msg=n)
            if method == "dfbst":
                np.testing.assert_array_equal(lt.dmask, lf.dmask, err_msg=n)
                seen["D dropped"] |= lf.dmask_nnz < lf.weight.size
        seen["beta"] |= s_f.beta_term > 0
        seen["clip"] |= s_f.grad_norm > 1.0
    return seen


LENET_SCHEDULE = [(e, i) for e in (1, 2, 3) for i in range(3)]


@pytest.mark.parametrize("float32_masks", [False, True])
@pytest.mark.parametrize("method", ["dst", "dfbst"])
@pytest.mark.parametrize("name", ["lenet300_100", "lenet_5"])
def test_textbook_trainer_equals_default_lenets(name, method, float32_masks):
    seen = run_pair(name, method, float32_masks, LENET_SCHEDULE, batch=8)
    if method == "dfbst":
        assert seen["beta"] and seen["D dropped"]


@pytest.mark.parametrize("name", ["vgg16", "resnet18"])
def test_textbook_trainer_equals_default_deep(name):
    seen = run_pair(name, "dfbst", False, [(1, 0), (2, 1)], batch=2)
    assert seen["beta"] and seen["D dropped"]


def test_textbook_trainer_refuses_what_has_no_textbook_form():
    model = build("lenet300_100", method="dfbst", dtype=np.float64, weight_grad="predicted",
                  textbook=True)
    with pytest.raises(ValueError, match="predicted"):
        dn.Trainer(model).step(np.zeros((2, 1, 28, 28)), np.zeros(2, int), epoch=1, index=0)
    with pytest.raises(ValueError, match="long-tailed"):
        build("lenet300_100", method="dfbst", dtype=np.float64, estimator="identity", textbook=True)


def test_textbook_trainer_must_match_the_model():
    """The implementation is chosen when the model is built; a trainer that asks for
    the other one is refused, naming how to build the model."""
    with pytest.raises(ValueError, match=r"models.build\(\.\.\., textbook=True\)"):
        dn.Trainer(build("lenet300_100", method="dst", dtype=np.float64), textbook=True)
    with pytest.raises(ValueError, match=r"textbook=False"):
        dn.Trainer(build("lenet300_100", method="dst", dtype=np.float64, textbook=True),
                   textbook=False)
    assert dn.Trainer(build("lenet300_100", method="dst", textbook=True)).textbook
