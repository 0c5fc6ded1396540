"""Trainer.step's trace: the stages in the order of one step, each what it claims to be."""
import numpy as np
import pytest

import dfbst_np as dn
from dfbst_np.models import build
from tests.helpers import rel_err


def _setup(method, clip_norm=None, momentum=0.0, weight_decay=0.0):
    model = build("lenet300_100", method=method, num_classes=10, dtype=np.float64,
                  rng=np.random.default_rng(0))
    trainer = dn.Trainer(model, lr=0.1, momentum=momentum, weight_decay=weight_decay,
                         alpha=5e-6, beta=0.1, clip_norm=clip_norm)
    rng = np.random.default_rng(1)
    return model, trainer, rng.random((6, 784)), rng.integers(0, 10, 6)


@pytest.mark.parametrize("method", ["dense", "dst", "dfbst"])
def test_stages_in_order_and_update_is_sgd_of_used_grad(method):
    model, trainer, x, y = _setup(method)
    stages = {}
    before = {k: v.copy() for k, v in model.params.items()}
    stats = trainer.step(x, y, epoch=2, index=1, trace=lambda s, v: stages.setdefault(s, v))
    assert list(stages) == ["forward", "grad", "mask", "used_grad", "update"]
    assert stages["forward"]["loss"] == pytest.approx(stats.loss, rel=1e-15)
    for name, g in stages["used_grad"].items():        # no momentum, decay or clipping
        assert rel_err(stages["update"][name], before[name] - 0.1 * g) <= 1e-14
        assert np.array_equal(stages["update"][name], model.params[name])
    if method == "dfbst":
        for layer in ("fc1", "fc2", "fc3"):
            D = stages["mask"][f"{layer}.dmask"]
            assert 0 < D.mean() <= 1
            assert np.array_equal(stages["used_grad"][f"{layer}.weight"],
                                  stages["grad"][f"{layer}.weight"] * D)


def test_grad_stage_is_before_clipping_and_momentum_buffers_reported():
    model, trainer, x, y = _setup("dfbst", clip_norm=1e-3, momentum=0.9)
    stages = {}
    trainer.step(x, y, epoch=1, index=0, trace=lambda s, v: stages.setdefault(s, v))
    g, used = stages["grad"]["fc3.bias"], stages["used_grad"]["fc3.bias"]
    total = np.sqrt(sum(float((u ** 2).sum()) for u in stages["used_grad"].values()))
    assert total == pytest.approx(1e-3, rel=1e-5)       # clipping acted on used_grad only
    assert np.linalg.norm(used) < np.linalg.norm(g)
    assert np.array_equal(stages["update"]["fc3.bias.momentum_buffer"], used)   # first step: buf = g
