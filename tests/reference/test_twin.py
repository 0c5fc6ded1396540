"""The twin ``verify`` builds from a torch model's own modules (``reference/twin.py``).

What is proven: on four architectures of the independent kit (residual
block, BatchNorm, strided and padded convs, pooling, flatten and reshape
written four ways), the twin's forward equals the torch forward and its
backward's dL/dx equals autograd's (float64, 1e-10 relative); state-dict
names are the torch model's; modules made inside ``forward`` and pooling
arguments passed by position are followed; float32 masks are detected per
layer from the forward (and a float32 constant is not taken for one); a
forward torch.fx cannot trace falls back to the built-in twin of the same
names with a warning, and is refused, naming torch.fx, when none matches.
"""
import numpy as np
import pytest
import torch
import torch.nn as nn

from dfbst_np.reference import ReferenceTrainer, build
from dfbst_np.reference.twin import TraceError, TwinError, twin_from_torch
from dfbst_np.reference.verifier import VerifyError, verify
from tests.reference import independent_dfbst as kit

MODELS = {
    "mlp": (lambda: kit.MLP((144, 30, 10)), (1, 12, 12)),
    "lenet5": (kit.LeNet5, (1, 28, 28)),
    "conv_net": (kit.SmallConvNet, (1, 16, 16)),
}


def rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


@pytest.mark.parametrize("name", list(MODELS))
def test_twin_forward_and_input_gradient_equal_torch(name):
    make, shape = MODELS[name]
    torch.manual_seed(0)
    model = make().double()
    x = torch.rand((3,) + shape, dtype=torch.float64, requires_grad=True)
    twin, f32 = twin_from_torch(model, x.detach(), "dfbst")
    assert set(twin.state_dict()) == set(model.state_dict())
    assert f32 and all(f32.values())          # the kit's masks are (x > 0).float()
    twin.load_state_dict({k: v.detach().numpy() for k, v in model.state_dict().items()})
    twin.train()
    y = model(x)
    dy = torch.randn_like(y)
    (y * dy).sum().backward()
    ours = twin.forward(x.detach().numpy())
    assert rel(ours, y.detach().numpy()) < 1e-10
    assert rel(twin.backward(dy.numpy()), x.grad.numpy()) < 1e-10


def test_modules_made_in_forward_and_positional_pool_arguments():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = kit.MLinear(4, 3)
            self.cutoff = torch.tensor(0.5)

        def forward(self, x):
            x = nn.AvgPool2d(2)(x)                                   # made in forward
            x = nn.functional.max_pool2d(x, 1, 1, 0, 1, False, False)  # all by position
            return self.fc(x.reshape(x.shape[0], -1))

    model = Net().double()
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    twin, f32 = twin_from_torch(model, x, "dfbst")
    twin.load_state_dict({k: v.detach().numpy() for k, v in model.state_dict().items()})
    assert rel(twin.forward(x.numpy()), model(x).detach().numpy()) < 1e-12
    assert f32 == {"fc": True}

    class Ceil(Net):
        def forward(self, x):
            return self.fc(nn.functional.max_pool2d(x, 2, 2, 0, 1, True).flatten(1))
    with pytest.raises(TwinError, match=r"max_pool2d.*ceil_mode=True"):
        twin_from_torch(Ceil().double(), x, "dfbst")


class DataDependent(nn.Module):
    """A forward with Python control flow on a tensor's value: torch.fx cannot trace it."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        if x.sum() > 0:
            return self.inner(x)
        return self.inner(-x)


def test_an_untraceable_forward_falls_back_to_a_built_in_or_is_refused():
    torch.manual_seed(0)
    ref = build("lenet300_100", method="dfbst", dtype=torch.float64)
    x = torch.rand(2, 1, 28, 28, dtype=torch.float64)
    with pytest.raises(TraceError, match="torch.fx cannot trace"):
        twin_from_torch(DataDependent(ref), x, "dfbst")
    trainer = ReferenceTrainer(ref)
    g = np.random.default_rng(0)
    data = [(g.random((2, 1, 28, 28)), g.integers(0, 10, 2))]
    report = verify(DataDependent(ref), lambda m, x, y, e, i: trainer.step(x, y, e, i), data,
                    name_map={"inner": ""}, schedule=[(1, 0)])
    assert report.ok and "dfbst_np's lenet300_100" in report.summary
    assert any("forward order is taken from dfbst_np's lenet300_100" in w for w in report.warnings)
    model = DataDependent(kit.MLP((784, 20, 10))).double()
    with pytest.raises(VerifyError, match=r"torch.fx cannot trace .*, and the torch model matches "
                                          r"no built-in architecture"):
        verify(model, kit.DFBST(model), data, schedule=[(1, 0)])


def test_a_forward_ending_in_log_softmax_verifies_with_nll_loss():
    import torch.nn.functional as F

    class LogSoftmaxMLP(kit.MLP):
        def forward(self, x):
            return F.log_softmax(super().forward(x), dim=1)

    class NLL(kit.DFBST):
        def task_loss(self, out, y):
            return F.nll_loss(out, y)

    torch.manual_seed(0)
    model = LogSoftmaxMLP((144, 40, 20, 10)).double()
    trainer = NLL(model)
    g = np.random.default_rng(0)
    data = [(g.random((4, 1, 12, 12)), g.integers(0, 10, 4)) for _ in range(3)]
    report = verify(model, trainer, data, stress=True, end_epoch=trainer.end_epoch)
    assert report.ok and not report.blind_spots, str(report)[:2000]
    assert any(r.quantity == "logits" and r.total == 40 for r in report.rows)
    # a planted bug is still found: the log_softmax changes nothing of the rules
    torch.manual_seed(0)
    model = LogSoftmaxMLP((144, 40, 20, 10)).double()

    class NLLNoPlateau(NLL, kit.NoPlateau):
        pass
    trainer = NLLNoPlateau(model)
    report = verify(model, trainer, data, stress=True, end_epoch=trainer.end_epoch)
    assert not report.ok and report.first.stage == "grad"


def _untraceable_reference():
    """The reference LeNet-300-100 behind a forward torch.fx cannot trace (a data-dependent
    branch): verify falls back to the built-in twin and reads the mask dtype off the masks."""
    torch.manual_seed(0)
    model = build("lenet300_100", method="dfbst", dtype=torch.float64)

    class Untraceable(type(model)):
        def forward(self, x):
            if float(x.sum()) > -1e300:
                return super().forward(x)
            return None

    model.__class__ = Untraceable
    trainer = ReferenceTrainer(model)
    g = np.random.default_rng(0)
    batches = [(g.random((4, 1, 28, 28)), g.integers(0, 10, 4)) for _ in range(3)]
    return model, (lambda m, x, y, epoch, index: trainer.step(x, y, epoch, index)), trainer, batches


def test_untraced_model_gets_a_built_in_twin_with_the_masks_dtype_it_exposes():
    model, step, trainer, batches = _untraceable_reference()
    report = verify(model, step, batches, end_epoch=trainer.end_epoch, stress=True)
    assert report.ok, str(report)[:2000]
    assert "dfbst_np's lenet300_100" in report.summary
    assert "float32 masks, as your exposed masks are" in report.summary
    assert any("torch.fx cannot trace" in w for w in report.warnings)
    # the dtype matters: the same code against float64 masks is not OK
    model, step, trainer, batches = _untraceable_reference()
    report = verify(model, step, batches, end_epoch=trainer.end_epoch, stress=True,
                    float32_masks=False)
    assert not report.ok and "float64 masks, as passed" in report.summary
