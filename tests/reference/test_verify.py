"""``verify``: a user's PyTorch training step checked stage by stage against dfbst_np.

What is proven:

* the project's own PyTorch reference (``build`` + ``ReferenceTrainer``),
  wrapped as user code (a model and a ``step(model, x, y, epoch, index)``
  that knows nothing of verify), verifies OK for all four architectures,
  with and without stress; with stress every branch of SPEC section 7's
  coverage fired (t < 0, reset, D dropped entries, beta term on and off,
  clipping, epochs 1 and 2). VGG-16 and ResNet-18 cost 10 to 20 s per step
  for both sides together on the shared 2-core machine (their 15 M / 11 M
  weights, not the images), so they run one step without stress and two
  with it (epoch 1 index 0, then epoch 2 index 1: the beta term off and on);
* seven bugs planted in that user code by monkeypatching or subclassing are
  each reported not OK with stress on, and the first divergence names the
  layer and the stage where the bug acts (both asserted), and the reading
  names the rule;
* without stress, a run that never reaches a branch says so; name maps make
  a model with other names verifiable, and missing or extra parameters are
  a clear error naming them; tolerances and zero floors act entry by entry.
"""
import numpy as np
import pytest
import torch
import torch.nn as nn

from dfbst_np.reference import ReferenceTrainer, build
from dfbst_np.reference import layers as ref_layers
from dfbst_np.reference.verdict import ATOL, RTOL, compare_entries
from dfbst_np.reference.verifier import (DEFAULT_SCHEDULE, StepError, VerifyError, default_settings,
                                       verify)

SHAPES = {"lenet300_100": (1, 28, 28), "lenet_5": (1, 28, 28),
          "vgg16": (3, 32, 32), "resnet18": (3, 16, 16)}
ALL_BRANCHES = {"epoch 1", "epoch 2", "state carried between steps", "t < 0", "reset",
                "density 1-5 %", "D dropped entries", "u < 0", "beta term on", "beta term off",
                "beta off after on", "clipping active"} | {
    f"h({v}) {r}" for v in "tu" for r in ("|x| <= 0.4", "0.4 < |x| <= 1", "|x| > 1")}


def user_code(name, trainer_cls=ReferenceTrainer, seed=0):
    """The reference as a researcher's code: a float64 model and a step that owns its trainer."""
    torch.manual_seed(seed)
    model = build(name, method="dfbst", dtype=torch.float64)
    trainer = trainer_cls(model)

    def step(m, x, y, epoch, index):
        return trainer.step(x, y, epoch, index)

    return model, step, trainer.end_epoch


def batches(name, n=3, size=4, seed=0):
    g = np.random.default_rng(seed)
    return [(g.random((size,) + SHAPES[name]), g.integers(0, 10, size)) for _ in range(n)]


def run(name="lenet300_100", stress=True, trainer_cls=ReferenceTrainer, schedule=DEFAULT_SCHEDULE,
        **kw):
    model, step, end_epoch = user_code(name, trainer_cls)
    return verify(model, step, batches(name), stress=stress, schedule=schedule,
                  end_epoch=end_epoch, **kw)


# -- the reference verifies ------------------------------------------------
@pytest.mark.parametrize("name", ["lenet300_100", "lenet_5", "vgg16", "resnet18"])
@pytest.mark.parametrize("stress", [False, True])
def test_reference_verifies_ok(name, stress):
    big = name in ("vgg16", "resnet18")
    schedule = ([(1, 0), (2, 1), (3, 0)] if stress else [(1, 1)]) if big else DEFAULT_SCHEDULE
    report = run(name, stress=stress, schedule=schedule)
    assert report.ok, str(report)[:3000]
    assert report.first is None
    stages = {r.stage for r in report.rows}
    assert stages == {"forward", "grad", "mask", "used_grad", "update"} | ({"start"} if stress or not big else set())
    names = {r.quantity for r in report.rows}
    assert {"logits", "loss"} <= names
    assert any(q.endswith(".dmask") for q in names) and any(q.endswith(".momentum_buffer") for q in names)
    # every row was really compared: entries counted, none mismatched
    assert all(r.total > 0 and r.mismatched == 0 for r in report.rows)
    assert str(report).startswith("verify: OK")
    if stress:
        assert set(report.coverage) == ALL_BRANCHES
        assert all(report.coverage.values()), report.coverage
        assert "never exercised" not in str(report)


@pytest.mark.parametrize("method", ["dst", "dense"])
def test_other_methods_verify_ok(method):
    settings = default_settings(method)
    torch.manual_seed(0)
    model = build("lenet300_100", method=method, dtype=torch.float64)
    trainer = ReferenceTrainer(model, **settings)

    def step(m, x, y, epoch, index):
        trainer.step(x, y, epoch, index)        # returns nothing: the loss is read from backward

    report = verify(model, step, batches("lenet300_100"), method=method, settings=settings,
                    stress=True, end_epoch=trainer.end_epoch)
    assert report.ok, str(report)[:2000]
    assert any(r.quantity == "loss" for r in report.rows)
    assert all(report.coverage.values()), report.coverage
    assert ("t < 0" in report.coverage) == (method == "dst")
    assert "beta term on" not in report.coverage


def test_without_stress_the_report_warns_about_branches_that_never_fired():
    report = run(stress=False, schedule=[(1, 0), (1, 1)])
    assert report.ok
    assert not report.coverage["reset"] and not report.coverage["epoch 2"]
    assert not report.coverage["beta term on"]
    warning = next(w for w in report.warnings if w.startswith("never exercised"))
    assert "reset" in warning and "beta term on" in warning and "stress=True" in warning
    assert "warning: never exercised" in str(report)


# -- seven planted bugs -------------------------------------------------------
def bug_t_not_abs(monkeypatch):
    monkeypatch.setattr(ref_layers._MaskRule, "_threshold_column",
                        lambda self: self.threshold.view(-1, 1))
    return ReferenceTrainer, ("forward", "fc1", "t vs |t|")


def bug_ste_slope(monkeypatch):
    def slope(x):
        a = x.abs()
        return torch.where(a <= 0.4, 1.0 - 2.0 * a,
                           torch.where(a <= 1.0, torch.full_like(a, 0.4), torch.zeros_like(a)))
    monkeypatch.setattr(ref_layers, "long_tailed_estimator", slope)
    return ReferenceTrainer, ("grad", "fc1", "straight-through")


def _backward_mask(normalise):
    def apply_backward_mask(self):
        if self.method != "dfbst" or self.weight.grad is None:
            return None
        grad = self.weight.grad
        rows = grad.view(grad.shape[0], -1)
        dmask = ref_layers.binary_step(normalise(rows).abs() - self.dthreshold.view(-1, 1),
                                       self.float32_masks).view(grad.shape)
        self.dmask = dmask.detach()
        g = grad * dmask
        self.weight.grad = g.detach()
        return g
    return apply_backward_mask


def bug_no_row_normalisation(monkeypatch):
    monkeypatch.setattr(ref_layers._MaskRule, "apply_backward_mask", _backward_mask(lambda r: r))
    return ReferenceTrainer, ("mask", "fc1", "no row normalisation")


def bug_l2_row_normalisation(monkeypatch):
    monkeypatch.setattr(ref_layers._MaskRule, "apply_backward_mask",
                        _backward_mask(lambda r: r / r.norm(dim=1, keepdim=True)))
    return ReferenceTrainer, ("mask", "fc1", "L2 row normalisation")


class BetaAtIndexZero(ReferenceTrainer):
    def step(self, x, y, epoch, index):
        # the index only decides the beta term: index 1 for 0 adds it at batch index 0
        return super().step(x, y, epoch, index if index != 0 else 1)


def bug_beta_at_index_zero(monkeypatch):
    return BetaAtIndexZero, ("forward", "fc1", "beta term")


class NoDecayOnThresholds(ReferenceTrainer):
    def __init__(self, model, **kw):
        super().__init__(model, **kw)
        thresholds = [p for n, p in model.named_parameters() if n.endswith("threshold")]
        ids = {id(p) for p in thresholds}
        others = [p for p in model.parameters() if id(p) not in ids]
        self.optimizer = torch.optim.SGD([{"params": others}, {"params": thresholds, "weight_decay": 0.0}],
                                         lr=0.1, momentum=0.9, weight_decay=1e-4)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, [80, 120], 0.1)


def bug_no_weight_decay_on_thresholds(monkeypatch):
    return NoDecayOnThresholds, ("update", "fc1", "no weight decay on thresholds")


class ClipBeforeMask(ReferenceTrainer):
    """Clips the loss gradient, then applies D (SPEC: D first, then clipping)."""

    def __init__(self, model, **kw):
        super().__init__(model, **kw)
        self._clipped = False

    def step(self, x, y, epoch, index):
        self._clipped = False
        return super().step(x, y, epoch, index)


def bug_clip_before_mask(monkeypatch):
    trainers = []
    clip = nn.utils.clip_grad_norm_
    apply = ref_layers._MaskRule.apply_backward_mask

    class Trainer(ClipBeforeMask):
        def __init__(self, model, **kw):
            super().__init__(model, **kw)
            trainers.append(self)

    def apply_after_clipping(layer):
        tr = trainers[-1]
        if not tr._clipped:
            clip([p for p in tr.model.parameters() if p.grad is not None], tr.clip_norm)
            tr._clipped = True
        return apply(layer)

    def norm_only(params, max_norm, *a, **kw):
        return clip(params, float("inf"))       # the norm, no clipping: it happened before D

    monkeypatch.setattr(ref_layers._MaskRule, "apply_backward_mask", apply_after_clipping)
    monkeypatch.setattr(nn.utils, "clip_grad_norm_", norm_only)
    return Trainer, ("used_grad", "fc1", "clipping")


BUGS = [bug_t_not_abs, bug_ste_slope, bug_no_row_normalisation, bug_l2_row_normalisation,
        bug_beta_at_index_zero, bug_no_weight_decay_on_thresholds, bug_clip_before_mask]


@pytest.mark.parametrize("plant", BUGS, ids=[b.__name__[4:] for b in BUGS])
def test_planted_bug_is_found_where_it_acts(monkeypatch, plant):
    trainer_cls, (stage, layer, reading) = plant(monkeypatch)
    report = run(stress=True, trainer_cls=trainer_cls)
    assert not report.ok
    first = report.first
    assert (first.stage, first.layer) == (stage, layer), first.describe() + " / " + first.reading
    assert reading in first.reading, first.reading
    assert first.mismatched > 0 and first.mismatched <= first.total
    assert first in report.failures() and report.failures()[0] is first
    text = str(report)
    assert text.startswith("verify: DIVERGENCE") and f"stage {stage}" in text and reading in text


def test_first_divergence_reports_count_index_and_both_values(monkeypatch):
    bug_no_row_normalisation(monkeypatch)
    first = run().first
    assert first.quantity == "fc1.dmask" and (first.epoch, first.index) == (1, 0)
    assert first.total == 300 * 784 and 0 < first.mismatched < first.total
    assert len(first.worst_index) == 2 and {first.ours, first.theirs} == {0.0, 1.0}
    assert "fc1.dmask differs at epoch 1, index 0, stage mask" in first.describe()


# -- names, tolerances, errors ---------------------------------------------------
class Wrapped(nn.Module):
    """The reference LeNet-300-100 under other names: ``net.fc1.weight`` ..."""

    def __init__(self, inner):
        super().__init__()
        self.net = inner

    def forward(self, x):
        return self.net(x)


def test_other_names_verify_without_and_with_a_name_map():
    # the twin is built from the model's own modules: its names are the model's
    model, step, end_epoch = user_code("lenet300_100")
    wrapped = Wrapped(model)
    report = verify(wrapped, step, batches("lenet300_100"), schedule=[(1, 0), (1, 1)],
                    end_epoch=end_epoch)
    assert report.ok and any(r.quantity == "net.fc1.dmask" for r in report.rows)
    assert "built from your model's modules" in report.summary
    # a name map that renames parameters takes the built-in twin of those names
    model, step, end_epoch = user_code("lenet300_100")
    report = verify(Wrapped(model), step, batches("lenet300_100"), name_map={"net": ""},
                    schedule=[(1, 0), (1, 1)], end_epoch=end_epoch)
    assert report.ok and any(r.quantity == "fc1.dmask" for r in report.rows)
    assert "dfbst_np's lenet300_100" in report.summary
    # a name map that leaves names the built-in twins do not have is refused, naming them
    with pytest.raises(VerifyError, match=r"missing in your model: fc1\.weight.*extra in your model: "
                                          r"x\.fc1\.weight"):
        verify(Wrapped(model), step, batches("lenet300_100"), name_map={"net": "x"})


def test_extra_parameter_is_named():
    model, step, _ = user_code("lenet300_100")
    model.fc2.scale = nn.Parameter(torch.ones(3, dtype=torch.float64))
    with pytest.raises(VerifyError, match=r"fc2 looks like a masked layer .* also has parameters \['scale'\]"):
        verify(model, step, batches("lenet300_100"))


def test_bad_inputs_are_clear_errors():
    model, step, _ = user_code("lenet300_100")
    with pytest.raises(VerifyError, match="float64"):
        verify(model.float(), step, batches("lenet300_100"))
    model = model.double()
    with pytest.raises(VerifyError, match="schedule entry 1"):
        verify(model, step, batches("lenet300_100"), schedule=[(2, 0), (1, 0)])
    with pytest.raises(VerifyError, match="unknown settings"):
        verify(model, step, batches("lenet300_100"), settings={"learning_rate": 0.1})

    def broken(m, x, y, epoch, index):
        raise RuntimeError("my bug")
    with pytest.raises(StepError, match="your step raised RuntimeError at epoch 1, index 0: my bug"):
        verify(model, broken, batches("lenet300_100"))


def test_compare_entries_counts_and_floors():
    ours = np.array([[1.0, 0.0], [2.0, -3.0]])
    theirs = ours + np.array([[1e-7, 5e-13], [0.0, 3e-5]])
    res = compare_entries(ours, theirs, RTOL, ATOL)
    # 1e-7 <= 1e-6 * 1; 5e-13 <= floor 1e-12; 3e-5 > 3e-6: one entry
    assert res["mismatched"] == 1 and res["total"] == 4 and res["worst_index"] == (1, 1)
    assert res["ours"] == -3.0 and res["theirs"] == pytest.approx(-3.0 + 3e-5)
    # a true zero judged by the floor: a smaller floor flags it, a larger one accepts more
    assert compare_entries(ours, theirs, RTOL, 1e-13)["mismatched"] == 2
    assert compare_entries(ours, theirs, RTOL, 1e-4)["mismatched"] == 0
    assert compare_entries(None, theirs, RTOL, ATOL)["note"] == "present only in your code"
    assert compare_entries(ours, ours[:1], RTOL, ATOL)["mismatched"] == 4
    assert compare_entries(np.array([1.0]), np.array([np.nan]), RTOL, ATOL)["mismatched"] == 1


def test_user_floor_is_applied_per_quantity():
    class Off(ReferenceTrainer):
        """Adds 1e-9 to fc3.bias's gradient just before SGD (after verify has read it)."""

        def __init__(self, model, **kw):
            super().__init__(model, **kw)
            def nudge(opt, args, kwargs):
                model.fc3.bias.grad.add_(1e-9)
            self.optimizer.register_step_pre_hook(nudge)

    strict = dict(stress=False, trainer_cls=Off, schedule=[(1, 0)], rtol=1e-12)
    report = run(**strict)
    assert not report.ok
    assert {r.quantity for r in report.failures()} == {"fc3.bias", "fc3.bias.momentum_buffer"}
    assert report.first.stage == "update"
    # a floor above the offset for that quantity (its momentum buffer included) accepts it
    assert run(**strict, floors={"fc3.bias": 1e-8}).ok


def test_default_settings_are_the_reference_ones():
    assert default_settings("dfbst") == dict(lr=0.1, momentum=0.9, weight_decay=1e-4, alpha=5e-6,
                                             beta=0.1, clip_norm=1.0, milestones=(80, 120), gamma=0.1)
    assert default_settings("dst")["clip_norm"] is None
