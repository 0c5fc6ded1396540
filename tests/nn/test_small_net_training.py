"""A small dense network (conv, BN, pool, residual add, FC) trained 5 steps here and in
PyTorch from the same initial state ends with the same parameters (<= 1e-9, float64).

This chains everything the engine has: forward, the hand-written backward of
every layer, the loss, clipping and SGD with momentum and weight decay.
"""
import numpy as np
import torch

from dfbst_np.nn import (SGD, BatchNorm2d, Conv2d, CrossEntropyLoss, Flatten, Linear, MaxPool2d,
                         ReLU, Residual, Sequential, clip_grad_norm)
from tests.helpers import rel_err

tnn = torch.nn
D = np.float64


def build():
    return Sequential(
        Conv2d(3, 6, 3, padding=1, dtype=D, rng=1), BatchNorm2d(6, dtype=D), ReLU(D),
        Residual(Sequential(Conv2d(6, 6, 3, padding=1, bias=False, dtype=D, rng=2),
                            BatchNorm2d(6, dtype=D), ReLU(D),
                            Conv2d(6, 6, 3, padding=1, bias=False, dtype=D, rng=3))),
        ReLU(D), MaxPool2d(2, dtype=D), Flatten(dtype=D), Linear(6 * 4 * 4, 5, dtype=D, rng=4))


class TorchResidual(tnn.Module):
    def __init__(self, body):
        super().__init__()
        self.body = body

    def forward(self, x):
        return self.body(x) + x


def build_torch():
    return tnn.Sequential(
        tnn.Conv2d(3, 6, 3, padding=1), tnn.BatchNorm2d(6), tnn.ReLU(),
        TorchResidual(tnn.Sequential(tnn.Conv2d(6, 6, 3, padding=1, bias=False), tnn.BatchNorm2d(6),
                                     tnn.ReLU(), tnn.Conv2d(6, 6, 3, padding=1, bias=False))),
        tnn.ReLU(), tnn.MaxPool2d(2), tnn.Flatten(), tnn.Linear(96, 5)).double()


def test_five_training_steps_match_torch():
    model, tmodel = build(), build_torch()
    assert list(model.state_dict()) == list(tmodel.state_dict())
    tmodel.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()})
    opt = SGD(model.params, lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True)
    topt = torch.optim.SGD(tmodel.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True)
    ce = CrossEntropyLoss(D)
    g = np.random.default_rng(0)
    clipped = 0
    for _ in range(5):
        x, y = g.standard_normal((4, 3, 8, 8)), g.integers(0, 5, 4)
        model.zero_grad()
        ce.forward(model.forward(x), y)
        model.backward(ce.backward())
        norm = clip_grad_norm(model.grads, 0.5)
        opt.step(model.grads)

        topt.zero_grad()
        tnn.functional.cross_entropy(tmodel(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        tnorm = tnn.utils.clip_grad_norm_(tmodel.parameters(), 0.5)
        topt.step()
        assert abs(norm - float(tnorm)) <= 1e-12 * float(tnorm)
        clipped += norm > 0.5
    assert clipped > 0                     # clipping was exercised
    tsd = tmodel.state_dict()
    for key, value in model.state_dict().items():
        assert rel_err(value, tsd[key].numpy()) <= 1e-9, key
