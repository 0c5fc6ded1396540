"""The comparison helper, driven by a stand-in for the NumPy side.

``TorchBacked`` exposes the dfbst_np model interface (NumPy arrays keyed by
dotted names) but computes with a second torch model, so that the plumbing of
``compare`` is tested independently of the NumPy implementation: two equal
models must compare at exactly zero error, and a perturbed one must not.
"""
import math

import numpy as np
import pytest

import torch
import torch.nn.functional as F  # noqa: E402

from dfbst_np.reference import (ReferenceTrainer, Row, build, compare,  # noqa: E402
                                format_table, max_rel_err, to_torch_state_dict)


class TorchBacked:
    """The dfbst_np model interface on top of a torch model."""

    def __init__(self, model):
        self.model = model

    @property
    def params(self):
        return {k: p.detach().numpy() for k, p in self.model.named_parameters()}

    @property
    def grads(self):
        return {k: p.grad.numpy() for k, p in self.model.named_parameters() if p.grad is not None}

    def state_dict(self):
        return {k: v.numpy().copy() for k, v in self.model.state_dict().items()}

    def load_state_dict(self, sd):
        self.model.load_state_dict(to_torch_state_dict(sd, like=self.model))

    def named_modules(self):
        return self.model.named_modules()

    def train(self, mode=True):
        self.model.train(mode)

    def zero_grad(self):
        self.model.zero_grad(set_to_none=True)

    def forward(self, x):
        self._x = torch.as_tensor(x)
        self._out = self.model(self._x)
        return self._out.detach().numpy()

    def backward(self, dlogits):
        self._out.backward(torch.as_tensor(dlogits))


class CE:
    def forward(self, logits, labels):
        self._z = torch.tensor(logits, requires_grad=True)
        self._loss = F.cross_entropy(self._z, torch.as_tensor(labels))
        return float(self._loss.detach())

    def backward(self):
        self._loss.backward()
        return self._z.grad.numpy()


def pair(name, seed=0, **kw):
    torch.manual_seed(seed)
    ref = build(name, **kw)
    torch.manual_seed(seed + 1)
    other = build(name, **kw)  # different weights: compare() must copy them over
    return ref, TorchBacked(other)


def test_single_batch_resnet_exact():
    ref, fake = pair("resnet18")
    g = np.random.default_rng(0)
    x, y = g.standard_normal((2, 3, 32, 32)), g.integers(0, 10, 2)
    rows = compare(fake, ref, (x, y), loss=CE())
    kinds = {r.kind for r in rows}
    assert kinds == {"output", "grad", "buffer", "mask"}
    names = {r.name for r in rows}
    assert {"logits", "loss", "conv1.weight", "layer2.0.downsample.0.threshold", "fc.bias",
            "bn1.running_mean", "layer1.0.bn2.num_batches_tracked",
            "layer2.0.downsample.0.mask"} <= names
    assert "conv1.dthreshold" not in names  # no gradient on either side
    assert max_rel_err(rows) == 0.0, format_table(rows)


def test_single_batch_flags_a_difference_and_a_missing_gradient():
    ref, fake = pair("lenet300_100")
    g = np.random.default_rng(1)
    x, y = g.random((4, 1, 28, 28)), g.integers(0, 10, 4)

    class Perturbed(TorchBacked):
        def load_state_dict(self, sd):
            sd = dict(sd)
            sd["fc2.bias"] = sd["fc2.bias"] + 1e-6
            super().load_state_dict(sd)

        @property
        def grads(self):
            out = dict(super().grads)
            out.pop("fc1.bias")
            return out

    rows = compare(Perturbed(fake.model), ref, (x, y), loss=CE())
    by = {r.name: r for r in rows}
    assert 0 < by["logits"].max_rel < 1e-3
    assert math.isinf(by["fc1.bias"].max_rel) and by["fc1.bias"].kind == "grad"
    assert max_rel_err(rows, kinds=["mask"]) == 0.0


def test_training_steps_exact_and_epoch_boundaries():
    ref, fake = pair("lenet_5")
    g = np.random.default_rng(2)
    batches = [(g.random((4, 1, 28, 28)), g.integers(0, 10, 4), e, i)
               for e, i in [(1, 0), (1, 1), (2, 0), (2, 1), (4, 0)]]
    tr_ref = ReferenceTrainer(ref, milestones=(2, 3))
    tr_np = ReferenceTrainer(fake.model, milestones=(2, 3))
    rows = compare(fake, ref, batches, np_trainer=tr_np, ref_trainer=tr_ref)
    assert tr_ref.lr == pytest.approx(1e-3) and tr_np.lr == pytest.approx(1e-3)
    names = {r.name for r in rows}
    assert {"step0.loss", "step3.beta_term", "step4.V", "conv1.dthreshold",
            "fc4.dmask", "conv2.mask"} <= names
    assert {r.kind for r in rows} == {"output", "param", "mask"}
    assert max_rel_err(rows) == 0.0, format_table(rows)
    rows = compare(fake, ref, batches[:2], np_trainer=tr_np, ref_trainer=tr_ref, every_step=True)
    assert "step1.fc3.weight" in {r.name for r in rows}


def test_trainers_both_or_neither_and_table():
    ref, fake = pair("lenet300_100")
    with pytest.raises(ValueError, match="both trainers"):
        compare(fake, ref, [], np_trainer=object())
    text = format_table([Row("fc1.weight", "grad", 1e-16, 2e-15), Row("x", "mask", math.inf, math.inf)])
    assert "fc1.weight" in text and "2.000e-15" in text and "inf" in text
    assert max_rel_err([]) == 0.0
