"""A second PyTorch DFBST, written from SPEC section 1 alone, as a researcher writes one.

Nothing here comes from ``dfbst_np.reference``: the masks are ``(x > 0).float()``
(float32, as DST's code makes them, even in a float64 model) and are not
exposed as attributes, the straight-through estimator is an autograd
Function, the backward mask is applied to ``.grad`` by hand, V_prev keeps its
graph to u until the next step, and the optimiser is plain ``torch.optim.SGD``.
It exists so that ``verify`` is tested on code it has never seen: the clean
kit must verify OK on any architecture, and each planted bug (a subclass
that changes one thing, as a real slip would) must be found.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class Step(torch.autograd.Function):
    """H forward, DST's long-tailed estimator backward."""

    plateau, knee, end = 0.4, 0.4, 1.0

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x > 0).float()

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * estimator(x)


def estimator(x):
    a = x.abs()
    return torch.where(a <= 0.4, 2 - 4 * a, torch.where(a <= 1, 0.4 * torch.ones_like(a),
                                                        torch.zeros_like(a)))


class MaskedLayer(nn.Module):
    """Shared by the linear and conv layers: weight, bias, threshold (t), dthreshold (u)."""

    reset_density = 0.01
    step_fn = Step

    def init(self, shape, bias):
        self.weight = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.empty(shape[0])) if bias else None
        self.threshold = nn.Parameter(torch.zeros(shape[0]))
        self.dthreshold = nn.Parameter(torch.zeros(shape[0]))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if bias:
            fan_in = self.weight[0].numel()
            nn.init.uniform_(self.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))

    def tau(self):
        # |t| with SPEC's sign s(0) = +1 (torch's abs has derivative 0 at 0)
        t = self.threshold
        return torch.where(t >= 0, t, -t)

    def get_mask(self):
        w = self.weight.view(self.weight.shape[0], -1)
        mask = self.step_fn.apply(w.abs() - self.tau().view(-1, 1))
        if mask.mean() <= self.reset_density:
            self.threshold.data.fill_(0)
            mask = self.step_fn.apply(w.abs() - self.tau().view(-1, 1))
        return mask.view(self.weight.shape)


class MLinear(MaskedLayer):
    def __init__(self, n_in, n_out, bias=True):
        super().__init__()
        self.init((n_out, n_in), bias)

    def forward(self, x):
        return F.linear(x, self.weight * self.get_mask(), self.bias)


class MConv(MaskedLayer):
    def __init__(self, c_in, c_out, k, stride=1, padding=0, bias=True):
        super().__init__()
        self.stride, self.padding = stride, padding
        self.init((c_out, c_in, k, k), bias)

    def forward(self, x):
        return F.conv2d(x, self.weight * self.get_mask(), self.bias, self.stride, self.padding)


# -- models (none of them is built into dfbst_np under these names) ----------
class MLP(nn.Module):
    def __init__(self, sizes=(784, 300, 100, 10)):
        super().__init__()
        self.layers = nn.ModuleList(MLinear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, x):
        x = x.flatten(1)
        for k, layer in enumerate(self.layers):
            x = layer(x)
            if k < len(self.layers) - 1:
                x = F.relu(x)
        return x


class LeNet5(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = MConv(1, 20, 5)
        self.c2 = MConv(20, 50, 5)
        self.f1 = MLinear(800, 500)
        self.f2 = MLinear(500, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = F.max_pool2d(F.relu(self.c2(x)), 2)
        return self.f2(F.relu(self.f1(x.view(x.size(0), -1))))


class Block(nn.Module):
    """A residual block: conv-BN-ReLU-conv-BN plus the input, ReLU."""

    def __init__(self, c):
        super().__init__()
        self.conv_a = MConv(c, c, 3, padding=1, bias=False)
        self.bn_a = nn.BatchNorm2d(c)
        self.conv_b = MConv(c, c, 3, padding=1, bias=False)
        self.bn_b = nn.BatchNorm2d(c)

    def forward(self, x):
        out = F.relu(self.bn_a(self.conv_a(x)))
        return F.relu(self.bn_b(self.conv_b(out)) + x)


class SmallConvNet(nn.Module):
    """conv-BN-ReLU-pool, a residual block, a strided conv, global pool, an fc head."""

    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Sequential(MConv(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.MaxPool2d(2))
        self.block = Block(8)
        self.down = MConv(8, 16, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(p=0.0)
        self.fc = MLinear(16, classes)

    def forward(self, x):
        x = self.block(self.stem(x))
        x = self.pool(F.relu(self.down(x)))
        return self.fc(self.drop(torch.flatten(x, 1)))


def masked_layers(model):
    return [m for m in model.modules() if isinstance(m, MaskedLayer)]


# -- the training step ---------------------------------------------------------
class DFBST:
    """One DFBST step per call: loss, backward, backward mask, clip, SGD."""

    def __init__(self, model, lr=0.1, momentum=0.9, weight_decay=1e-4, alpha=5e-6, beta=0.1,
                 clip=1.0):
        self.model, self.alpha, self.beta, self.clip = model, alpha, beta, clip
        self.layers = masked_layers(model)
        self.opt = self.make_optimizer(lr, momentum, weight_decay)
        self.sched = torch.optim.lr_scheduler.MultiStepLR(self.opt, [80, 120], 0.1)
        self.prev_var = None
        self.last_D = {}

    def make_optimizer(self, lr, momentum, weight_decay):
        return torch.optim.SGD(self.model.parameters(), lr=lr, momentum=momentum,
                               weight_decay=weight_decay)

    # each piece a method, so that a planted bug changes one of them
    def zero_grad(self):
        self.opt.zero_grad()

    def task_loss(self, out, y):
        return F.cross_entropy(out, y)

    def penalty(self):
        return self.alpha * sum(torch.exp(-l.threshold).sum() for l in self.layers)

    def beta_on(self, epoch, index):
        return epoch > 1 and index != 0

    def normalise(self, rows):
        denom = rows.abs().sum(dim=1, keepdim=True)
        return rows / torch.where(denom > 0, denom, torch.ones_like(denom))

    def dmask(self, layer, rows):
        return Step.apply(self.normalise(rows).abs() - layer.dthreshold.view(-1, 1))

    def variance(self, gs):
        return torch.cat(gs).std()

    def backward_mask(self):
        gs = []
        for layer in self.layers:
            rows = layer.weight.grad.detach().view(layer.weight.shape[0], -1)
            D = self.dmask(layer, rows)
            self.last_D[layer] = D.detach().view_as(layer.weight)
            g = rows * D
            layer.weight.grad = g.detach().view_as(layer.weight).clone()
            gs.append(g.flatten())
        self.prev_var = self.variance(gs)

    def clip_grads(self):
        nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)

    def optimizer_step(self):
        self.opt.step()

    def __call__(self, model, x, y, epoch, index):
        model.train()
        self.zero_grad()
        out = model(x)
        loss = self.task_loss(out, y) + self.penalty()
        if self.beta_on(epoch, index) and self.prev_var is not None:
            loss = loss + self.beta * self.prev_var
        loss.backward()
        self.backward_mask()
        self.clip_grads()
        self.optimizer_step()
        return loss.detach()

    def end_epoch(self):
        self.sched.step()


# -- planted bugs: each changes one thing, and the stage where verify must see it --
class ResetAt5Percent(DFBST):
    stage = "forward"
    reading = 'SPEC resets at <= 1 % only'

    def __init__(self, model, **kw):
        super().__init__(model, **kw)
        for layer in self.layers:
            layer.reset_density = 0.05


class NoPlateau(DFBST):
    stage = "grad"

    def __init__(self, model, **kw):
        super().__init__(model, **kw)
        for layer in self.layers:
            layer.step_fn = _step_with(lambda a: torch.where(a <= 0.4, 2 - 4 * a, torch.zeros_like(a)))


class BreakpointsSwapped(DFBST):
    stage = "grad"

    def __init__(self, model, **kw):
        super().__init__(model, **kw)
        for layer in self.layers:
            layer.step_fn = _step_with(lambda a: torch.where(
                a <= 1.0, 2 - 4 * a, torch.where(a <= 0.4, 0.4 * torch.ones_like(a), torch.zeros_like(a))))


class SlopeTwo(DFBST):
    stage = "grad"

    def __init__(self, model, **kw):
        super().__init__(model, **kw)
        for layer in self.layers:
            layer.step_fn = _step_with(lambda a: torch.where(
                a <= 0.4, 2 - 2 * a, torch.where(a <= 1, 0.4 * torch.ones_like(a), torch.zeros_like(a))))


class MomentumTimesDAfterStep(DFBST):
    stage = "update"
    reading = "multiplied by D after the optimiser's step"

    def optimizer_step(self):
        self.opt.step()
        for layer, D in self.last_D.items():
            buf = self.opt.state[layer.weight].get("momentum_buffer")
            if buf is not None:
                buf.mul_(D)


class MomentumTimesDBeforeStep(DFBST):
    stage = "start"
    reading = "multiplied by this step's D outside the optimiser's step"

    def optimizer_step(self):
        for layer, D in self.last_D.items():
            buf = self.opt.state.get(layer.weight, {}).get("momentum_buffer")
            if buf is not None:
                buf.mul_(D)
        self.opt.step()


class ZeroGradToZeros(DFBST):
    stage = "used_grad"
    reading = 'zero_grad(set_to_none=False)'

    def zero_grad(self):
        self.opt.zero_grad(set_to_none=False)


class PenaltyExpAbsT(DFBST):
    stage = "forward"
    reading = "exp(-|t|)"

    def penalty(self):
        return self.alpha * sum(torch.exp(-l.threshold.abs()).sum() for l in self.layers)


class PenaltySign(DFBST):
    # the loss moves by alpha * (exp(t) - exp(-t)), below the loss's tolerance; dt shows it
    stage = "grad"
    reading = "exp(t)"

    def penalty(self):
        return self.alpha * sum(torch.exp(l.threshold).sum() for l in self.layers)


class PenaltyOnU(DFBST):
    stage = "forward"
    reading = 'exp(-u)'

    def penalty(self):
        return super().penalty() + self.alpha * sum(torch.exp(-l.dthreshold).sum() for l in self.layers)


class SumCrossEntropy(DFBST):
    stage = "forward"
    reading = "the batch's sum"

    def task_loss(self, out, y):
        return F.cross_entropy(out, y, reduction="sum")


class L2RowNorm(DFBST):
    stage = "used_grad"
    reading = 'L2 row normalisation'

    def normalise(self, rows):
        return rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-300)


class NoRowNorm(DFBST):
    stage = "used_grad"
    reading = 'no row normalisation'

    def normalise(self, rows):
        return rows


class LayerNorm1(DFBST):
    """Normalises by the whole layer's sum of |dW| instead of each row's."""
    stage = "used_grad"
    reading = "the whole layer's sum"

    def normalise(self, rows):
        return rows / rows.abs().sum()


class DWithAbsU(DFBST):
    stage = "used_grad"
    reading = '|u| instead of u'

    def dmask(self, layer, rows):
        u = layer.dthreshold.view(-1, 1)
        return Step.apply(self.normalise(rows).abs() - torch.where(u >= 0, u, -u))


class DInverted(DFBST):
    stage = "used_grad"
    reading = 'inverted'

    def dmask(self, layer, rows):
        return Step.apply(layer.dthreshold.view(-1, 1) - self.normalise(rows).abs())


class ClipBeforeMask(DFBST):
    stage = "used_grad"
    reading = 'the clipping coefficient differs'

    def backward_mask(self):
        nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        super().backward_mask()

    def clip_grads(self):
        pass


class ClipWeightsOnly(DFBST):
    stage = "used_grad"

    def clip_grads(self):
        nn.utils.clip_grad_norm_([l.weight for l in self.layers], self.clip)


class BetaAtIndexZero(DFBST):
    stage = "forward"
    reading = 'where SPEC does not'

    def beta_on(self, epoch, index):
        return epoch > 1


class BetaFromEpochOne(DFBST):
    stage = "forward"
    reading = 'where SPEC does not'

    def beta_on(self, epoch, index):
        return index != 0


class BiasedStd(DFBST):
    # beta * V_prev moves the loss by less than its tolerance; du shows it
    stage = "grad"

    def variance(self, gs):
        return torch.cat(gs).std(unbiased=False)


class VariancePerLayer(DFBST):
    stage = "forward"

    def variance(self, gs):
        return sum(g.std() for g in gs)


class SignedTInMask(DFBST):
    """DST's mask H(|W| - t) in DFBST (SPEC: |t|)."""
    stage = "forward"
    reading = 't < 0 (M uses |t|)'

    def __init__(self, model, **kw):
        super().__init__(model, **kw)
        for layer in self.layers:
            layer.tau = (lambda l: (lambda: l.threshold))(layer)


class StepAtZeroIsOne(DFBST):
    """H(0) = 1: a mask made with >= keeps the weights equal to |t|."""
    stage = "forward"
    reading = '|W| = |t|'

    def __init__(self, model, **kw):
        super().__init__(model, **kw)
        for layer in self.layers:
            layer.step_fn = _StepGE


class NoDecayOnThresholds(DFBST):
    stage = "update"
    reading = 'no weight decay on thresholds'

    def make_optimizer(self, lr, momentum, weight_decay):
        t = [p for n, p in self.model.named_parameters() if n.endswith("threshold")]
        rest = [p for n, p in self.model.named_parameters() if not n.endswith("threshold")]
        return torch.optim.SGD([{"params": rest}, {"params": t, "weight_decay": 0.0}], lr=lr,
                               momentum=momentum, weight_decay=weight_decay)


class OptimizerRebuiltEachEpoch(DFBST):
    """Momentum lost at every epoch: the optimiser is made anew in end_epoch."""
    stage = "start"
    reading = 'momentum buffer of'

    def end_epoch(self):
        super().end_epoch()
        group = self.opt.param_groups[0]
        self.opt = self.make_optimizer(group["lr"], group["momentum"], group["weight_decay"])


class ThresholdDetached(DFBST):
    """t gets no gradient through the mask (only the penalty's)."""
    stage = "grad"

    def __init__(self, model, **kw):
        super().__init__(model, **kw)
        for layer in self.layers:
            layer.tau = (lambda l: (lambda: l.threshold.detach().abs()))(layer)


class AbsAtZero(DFBST):
    """|t| written as t.abs(): its derivative s(0) is 0, SPEC's is +1 (a reset leaves t = 0)."""
    stage = "grad"
    reading = "s(0) must be +1"

    def __init__(self, model, **kw):
        super().__init__(model, **kw)
        for layer in self.layers:
            layer.tau = (lambda l: (lambda: l.threshold.abs()))(layer)


def _step_with(h):
    class S(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return (x > 0).float()

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * h(x.abs())
    return S


class _StepGE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x >= 0).float()

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * estimator(x)


BUGS = [ResetAt5Percent, NoPlateau, BreakpointsSwapped, SlopeTwo, MomentumTimesDAfterStep,
        MomentumTimesDBeforeStep, ZeroGradToZeros, PenaltyExpAbsT, PenaltySign, PenaltyOnU,
        SumCrossEntropy, L2RowNorm, NoRowNorm, LayerNorm1, DWithAbsU, DInverted, ClipBeforeMask,
        ClipWeightsOnly, BetaAtIndexZero, BetaFromEpochOne, BiasedStd, VariancePerLayer,
        SignedTInMask, StepAtZeroIsOne, NoDecayOnThresholds, OptimizerRebuiltEachEpoch,
        ThresholdDetached, AbsAtZero]
