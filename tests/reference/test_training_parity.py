"""Whole training: dfbst_np's Trainer against the PyTorch ReferenceTrainer.

What is proven: from the same initial state (the reference's, copied through
the state dict) and the same batches, dfbst_np and the reference, trained
for 3 epochs of 3 batches of 8 in float64 (``float32_masks=False`` on both
sides), end with every parameter and buffer equal to 1e-8 relative, every
forward mask M and backward mask D identical, and the same loss, CE, alpha
and beta terms, V and gradient norm at every step. This holds for
LeNet-300-100, LeNet-5, VGG-16 and ResNet-18 with dfbst (the reference
settings: lr 0.1, momentum 0.9, weight decay 1e-4, alpha 5e-6, beta 0.1,
clipping at 1.0), and for LeNet-300-100 with dst (DST's settings: lr 0.01,
alpha 5e-4, no clipping) and dense. The milestone at epoch 2 drops the
learning rate for epoch 3 on both sides.

The test also checks, from the step statistics and the state recorded after
every step on both sides, that every rule it claims to cover really ran:

* the beta term is 0 throughout epoch 1 and at batch index 0 of every
  epoch, and > 0 on every other step (dfbst);
* u (dthreshold) stays exactly 0 with no momentum buffer until the first
  step with a beta term, (2, 1), changes there, and is left untouched at
  (3, 0), where it has a momentum buffer but no gradient ("no gradient" is
  not "zero gradient");
* clipping was active: the gradient norm exceeded clip_norm on some step;
* the thresholds have a gradient, so SGD's weight decay acts on them: both
  optimisers hold a momentum buffer for every ``threshold``;
* the reset rule fired on both sides: one layer's thresholds are set so that
  the first forward keeps nothing (dfbst: negative t with |t| above every
  |W|), and t is 0 right after that forward on both sides.

Inputs are small (LeNets 1x28x28, VGG-16 and ResNet-18 3x32x32; VGG needs
32x32 to reach its 512-feature classifier). The cost of a VGG-16 or ResNet-18
step is not in the images but in the 15 M / 11 M weights: every step makes
some forty elementwise passes over all weights on each side (masks,
estimator, backward mask, clipping, SGD), 5 to 10 s per step for both sides
together on the 2 shared cores of the development machine, so the full
schedule costs two to three minutes for the two of them. So that the new
tests stay under a minute, VGG-16 and ResNet-18 run two steps by default,
(1, 1) and (3, 1): the epoch-1 rule at a nonzero index, then (after two
epoch ends, so at the lowered learning rate) the beta term and u's first
update, with clipping, weight decay on thresholds, the reset and both masks
as above; the index-0 rule and "u untouched without a gradient" are covered
by the LeNets' full schedule. ``DFBST_FULL_TRAINING_PARITY=1`` gives VGG-16
and ResNet-18 the full 3 x 3 schedule as well.

Tolerance 1e-8 (the issue's bound). Measured (largest relative error of any
row): LeNet-300-100 1.6e-13 (dfbst), 1.7e-15 (dst), 1.5e-15 (dense);
LeNet-5 1.7e-12; VGG-16 7.2e-13 (7.1e-13 with the full schedule); ResNet-18
1.3e-10 (both schedules). ResNet's is V of the first step and what inherits
it (u, the beta term): ``torch.std`` over ResNet's 11 M masked gradient
entries is itself only accurate to ~1e-10 relative (the NumPy side sums
pairwise). VGG's ``classifier.0.bias`` (a linear bias followed by
BatchNorm1d) has a mathematically zero gradient; its parameter still agrees
to 1e-8.
"""
import os

import numpy as np
import pytest
import torch

from dfbst_np import models
from dfbst_np.reference import ReferenceTrainer, build, compare, format_table
from dfbst_np.reference.compare import _stats_dict
from dfbst_np.sparse.masked import masked_layers as np_masked_layers
from dfbst_np.train.trainer import Trainer

TOL = 1e-8
BATCH = 8
SHAPES = {"lenet300_100": (1, 28, 28), "lenet_5": (1, 28, 28),
          "vgg16": (3, 32, 32), "resnet18": (3, 32, 32)}
FULL = [(e, i) for e in (1, 2, 3) for i in range(3)]
SHORT = [(1, 1), (3, 1)]
BIG = ("vgg16", "resnet18")
# the layer whose thresholds are set so that the first forward keeps nothing
RESET_LAYER = {"lenet300_100": "fc2", "lenet_5": "conv2", "vgg16": "feature.3",
               "resnet18": "layer1.0.conv1"}
SETTINGS = {
    "dfbst": dict(lr=0.1, momentum=0.9, weight_decay=1e-4, alpha=5e-6, beta=0.1, clip_norm=1.0),
    "dense": dict(lr=0.1, momentum=0.9, weight_decay=1e-4, alpha=5e-6, beta=0.1, clip_norm=1.0),
    "dst": dict(lr=0.01, momentum=0.9, weight_decay=1e-4, alpha=5e-4, beta=0.1, clip_norm=None),
}
MILESTONES = (2,)


def schedule_for(name):
    if name in BIG and os.environ.get("DFBST_FULL_TRAINING_PARITY") != "1":
        return SHORT
    return FULL


class Recorder:
    """A trainer as ``compare`` drives it, recording stats and state after each step."""

    def __init__(self, trainer, snapshot):
        self.trainer, self.snapshot = trainer, snapshot
        self.stats, self.snaps, self.labels = [], [], []

    def step(self, x, y, epoch, index):
        stats = self.trainer.step(x, y, epoch=epoch, index=index)
        self.stats.append(_stats_dict(stats))
        self.snaps.append(self.snapshot())
        self.labels.append((epoch, index))
        return stats

    def end_epoch(self):
        self.trainer.end_epoch()


def np_snapshot(model, trainer):
    def snap():
        state = trainer.optimizer.state
        return {name: dict(u=layer.params["dthreshold"].copy() if "dthreshold" in layer.params else None,
                           u_buf=f"{name}.dthreshold" in state,
                           t_buf=f"{name}.threshold" in state)
                for name, layer in np_masked_layers(model)}
    return snap


def ref_snapshot(model, trainer):
    from dfbst_np.reference.layers import masked_layers
    state = trainer.optimizer.state

    def has_buf(p):
        return p is not None and "momentum_buffer" in state.get(p, {})

    def snap():
        return {name: dict(u=None if m.dthreshold is None else m.dthreshold.detach().numpy().copy(),
                           u_buf=has_buf(m.dthreshold), t_buf=has_buf(m.threshold))
                for name, m in masked_layers(model)}
    return snap


def force_reset(ref, name, method):
    """Thresholds of layer ``name`` that keep no weight on the first forward."""
    layer = dict(ref.named_modules())[name]
    with torch.no_grad():
        top = layer.weight.abs().reshape(layer.weight.shape[0], -1).max(dim=1).values
        # dfbst masks with |t|: a negative t whose magnitude tops every |W|
        layer.threshold.copy_(-(top + 0.05) if method == "dfbst" else top + 0.05)


def watch_thresholds(np_model, ref, name):
    """t right after every forward of layer ``name``, on both sides."""
    seen = {"np": [], "ref": [], "np_reset": []}
    np_layer = dict(np_model.named_modules())[name]
    forward = np_layer.forward

    def np_forward(x):
        y = forward(x)
        seen["np"].append(np_layer.params["threshold"].copy())
        seen["np_reset"].append(np_layer.state.fmask.reset)
        return y

    np_layer.forward = np_forward
    ref_layer = dict(ref.named_modules())[name]
    ref_layer.register_forward_hook(
        lambda m, inp, out: seen["ref"].append(m.threshold.detach().numpy().copy()))
    return seen


def check_rows(rows, tol):
    assert rows
    bad = [r for r in rows if (r.max_abs != 0 if r.kind == "mask" else not r.max_rel <= tol)]
    assert not bad, "\n" + format_table(bad)
    return max(r.max_rel for r in rows)


def run(name, method):
    schedule = schedule_for(name)
    torch.manual_seed(0)
    ref = build(name, method=method, float32_masks=False)
    np_model = models.build(name, method=method, dtype=np.float64, float32_masks=False)
    if method != "dense":
        force_reset(ref, RESET_LAYER[name], method)
    settings = SETTINGS[method]
    np_trainer = Trainer(np_model, milestones=MILESTONES, **settings)
    ref_trainer = ReferenceTrainer(ref, milestones=MILESTONES, **settings)
    rec_np = Recorder(np_trainer, np_snapshot(np_model, np_trainer))
    rec_ref = Recorder(ref_trainer, ref_snapshot(ref, ref_trainer))
    seen = watch_thresholds(np_model, ref, RESET_LAYER[name]) if method != "dense" else None
    g = np.random.default_rng(4)
    batches = [(g.random((BATCH,) + SHAPES[name]), g.integers(0, 10, BATCH), e, i)
               for e, i in schedule]
    rows = compare(np_model, ref, batches, np_trainer=rec_np, ref_trainer=rec_ref)
    return rows, rec_np, rec_ref, seen, np_trainer, ref_trainer


CASES = [("lenet300_100", "dfbst"), ("lenet_5", "dfbst"), ("vgg16", "dfbst"),
         ("resnet18", "dfbst"), ("lenet300_100", "dst"), ("lenet300_100", "dense")]


@pytest.mark.parametrize("name,method", CASES)
def test_training_matches_reference(name, method):
    rows, rec_np, rec_ref, seen, np_trainer, ref_trainer = run(name, method)
    n_steps = len(rec_np.stats)
    labels = rec_np.labels

    # -- the numbers ------------------------------------------------------
    kinds = {r.kind for r in rows}
    assert {"output", "param"} <= kinds
    assert ("mask" in kinds) == (method != "dense")
    assert ("buffer" in kinds) == (name in BIG)
    names = {r.name for r in rows}
    assert f"step{n_steps - 1}.loss" in names and f"step{n_steps - 1}.grad_norm" in names
    if method == "dfbst":
        assert any(r.name.endswith(".dmask") for r in rows)
        assert any(r.name.endswith(".dthreshold") for r in rows)
    worst = check_rows(rows, TOL)
    print(f"\n{name}/{method}, {n_steps} steps: max rel err {worst:.3e}")

    # the learning rate dropped at the milestone, on both sides
    lr = SETTINGS[method]["lr"]
    assert np_trainer.lr == pytest.approx(lr * 0.1) and ref_trainer.lr == pytest.approx(lr * 0.1)

    # -- the events -------------------------------------------------------
    for rec in (rec_np, rec_ref):
        clip = SETTINGS[method]["clip_norm"]
        if clip is not None:
            assert any(s["grad_norm"] > clip for s in rec.stats), "clipping never active"
        if method == "dense":
            continue
        last = rec.snaps[-1]
        assert all(v["t_buf"] for v in last.values()), "a threshold has no momentum buffer"
        if method != "dfbst":
            assert all(s["beta_term"] == 0 for s in rec.stats)
            continue
        for k, ((epoch, index), s) in enumerate(zip(labels, rec.stats)):
            if epoch == 1 or index == 0:
                assert s["beta_term"] == 0, (epoch, index)
            else:
                assert s["beta_term"] > 0, (epoch, index)
        first_u = next(k for k, (e, i) in enumerate(labels) if e >= 2 and i != 0)
        for k, snap in enumerate(rec.snaps):
            for layer, v in snap.items():
                if k < first_u:
                    assert np.all(v["u"] == 0) and not v["u_buf"], (layer, labels[k])
                else:
                    assert v["u_buf"], (layer, labels[k])
        assert any(np.any(v["u"] != 0) for v in rec.snaps[first_u].values())
        if (3, 0) in labels:
            k30 = labels.index((3, 0))
            for layer, v in rec.snaps[k30].items():
                np.testing.assert_array_equal(v["u"], rec.snaps[k30 - 1][layer]["u"])

    if method != "dense":
        # the reset fired in the first forward on both sides: t was 0 right after it
        assert seen["np_reset"][0]
        assert np.all(seen["np"][0] == 0) and np.all(seen["ref"][0] == 0)
        assert len(seen["np"]) == len(seen["ref"]) == n_steps
