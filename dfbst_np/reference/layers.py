"""Masked layers of the PyTorch reference (SPEC section 1, "Forward" and
"The backward mask").

Notation as in SPEC: W weight, b bias, t forward thresholds (``threshold``),
u backward thresholds (``dthreshold``), M forward mask, D backward mask,
H the strict step function and h its long-tailed straight-through estimator.
Gradients come from autograd: the only hand-written derivative is h, in
:class:`BinaryStep`.
"""
from __future__ import annotations

import math
from typing import Iterator, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import methods
# Reset rule of SPEC: a layer whose forward mask keeps at most this fraction
# of its weights has its thresholds t set back to zero (the textbook's constant).
from ..textbook import RESET_DENSITY

#: The registered methods the reference has: no mask (dense) or SPEC section 1's
#: threshold rule (DST, DFBST), with or without the backward mask.
METHODS = tuple(name for name in methods.names()
                if methods.get(name).threshold_mask or not methods.get(name).masked)


def long_tailed_estimator(x: torch.Tensor) -> torch.Tensor:
    """h(x) of SPEC: 2 - 4|x| for |x| <= 0.4, 0.4 for 0.4 < |x| <= 1, else 0.

    Parameters
    ----------
    x : torch.Tensor
        Points at which to evaluate h (any shape, any float dtype).

    Returns
    -------
    torch.Tensor
        h(x), same shape and dtype as ``x``.
    """
    a = x.abs()
    near = 2.0 - 4.0 * a
    return torch.where(a <= 0.4, near,
                       torch.where(a <= 1.0, torch.full_like(a, 0.4), torch.zeros_like(a)))


class BinaryStep(torch.autograd.Function):
    """H(x) = 1 if x > 0 else 0 forward; h(x) (DST's estimator) backward.

    ``BinaryStep.apply(x, float32_output)``. With ``float32_output=True`` the
    result is float32 whatever the dtype of ``x``, as the authors' ``.float()``
    masks are; autograd then rounds the gradient arriving at the mask to
    float32 before h multiplies it (SPEC, "Float32 masks in the reference").
    With ``False`` the mask keeps the dtype of ``x``.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, float32_output: bool = True) -> torch.Tensor:
        ctx.save_for_backward(x)
        out = x > 0
        return out.float() if float32_output else out.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (x,) = ctx.saved_tensors
        # grad_output is in the mask's dtype (float32 with float32 masks); the
        # product promotes back to x's dtype, which is exactly where the
        # reference's rounding sits.
        return grad_output * long_tailed_estimator(x), None


def binary_step(x: torch.Tensor, float32_output: bool = True) -> torch.Tensor:
    """Functional form of :class:`BinaryStep`: H(x) with gradient h(x)."""
    return BinaryStep.apply(x, float32_output)


class _MaskRule:
    """The mask rule shared by :class:`MaskedLinear` and :class:`MaskedConv2d`.

    A convolution weight is an (out, in*kh*kw) matrix to this rule: row i is
    output unit / filter i, and t_i, u_i act on that row.
    """

    method: str
    float32_masks: bool
    mask: Optional[torch.Tensor]
    dmask: Optional[torch.Tensor]

    def _init_mask_params(self, out_features: int, method: str, float32_masks: bool) -> None:
        if method not in METHODS:
            raise ValueError(f"{type(self).__name__}: method must be one of {METHODS}, got {method!r}")
        self.method = method
        self.float32_masks = bool(float32_masks)
        rule = methods.get(method)
        # Registered after weight and bias so the state dict order is
        # weight, bias, threshold, dthreshold, as in the reference checkpoints.
        if rule.threshold_mask:
            self.threshold = nn.Parameter(torch.zeros(out_features))
        else:
            self.register_parameter("threshold", None)
        if rule.learns_backward_mask:
            self.dthreshold = nn.Parameter(torch.zeros(out_features))
        else:
            self.register_parameter("dthreshold", None)
        self.mask = None
        self.dmask = None

    def reset_parameters(self) -> None:
        """W ~ kaiming_uniform(a = sqrt(5)), b ~ U(±1/sqrt(fan_in)), t = u = 0.

        Draws from torch's global generator in the same order as
        ``nn.Linear``/``nn.Conv2d`` (weight, then bias), so a seeded build
        reproduces the reference's initial weights.
        """
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            nn.init.uniform_(self.bias, -bound, bound)
        with torch.no_grad():
            if self.threshold is not None:
                self.threshold.zero_()
            if self.dthreshold is not None:
                self.dthreshold.zero_()

    def _threshold_column(self) -> torch.Tensor:
        """t as an (out, 1) column: |t| for DFBST, t itself for DST.

        |t| is written as a ``where`` rather than ``abs`` because the
        reference's sign s(t) is +1 at t = 0 (``abs`` would give 0 there).
        """
        t = self.threshold.view(-1, 1)
        if methods.get(self.method).abs_threshold:
            t = torch.where(t >= 0, t, -t)
        return t

    def _compute_mask(self) -> torch.Tensor:
        rows = self.weight.abs().view(self.weight.shape[0], -1)
        mask = binary_step(rows - self._threshold_column(), self.float32_masks)
        return mask.view(self.weight.shape)

    def forward_mask(self) -> Optional[torch.Tensor]:
        """M = H(|W| - |t_i|) (DFBST) or H(|W| - t_i) (DST), with the reset rule.

        If mean(M) <= 0.01 the thresholds are set to zero in place and M is
        recomputed; the reference does this on every forward, evaluation
        included, so this does too. Returns None for method ``dense``.
        """
        if self.threshold is None:
            return None
        mask = self._compute_mask()
        # Same arithmetic as the reference: the density is computed in the
        # mask's dtype (float32 with float32 masks) and compared with 0.01.
        if mask.sum() / mask.numel() <= RESET_DENSITY:
            with torch.no_grad():
                self.threshold.zero_()
            mask = self._compute_mask()
        self.mask = mask.detach()
        return mask

    def masked_weight(self) -> torch.Tensor:
        """W_hat = W * M (W itself for method ``dense``)."""
        mask = self.forward_mask()
        return self.weight if mask is None else self.weight * mask

    def apply_backward_mask(self) -> Optional[torch.Tensor]:
        """Replace ``weight.grad`` by dW * D and return that product, attached to u.

        Ghat_ij = dW_ij / sum_j |dW_ij| (0 for a zero row), D = H(|Ghat| - u_i)
        with u used as it is (no abs). The returned tensor g = dW * D is still
        attached to u through the estimator of H, so that V = std(g) can be
        differentiated in u on a later step; ``weight.grad`` gets a detached
        copy for the optimiser. ``self.dmask`` keeps D. Returns None when the
        layer is not DFBST or has no weight gradient.
        """
        if not methods.get(self.method).learns_backward_mask or self.weight.grad is None:
            return None
        grad = self.weight.grad
        rows = grad.view(grad.shape[0], -1)
        ghat = torch.nan_to_num(rows / rows.abs().sum(dim=1, keepdim=True))
        dmask = binary_step(ghat.abs() - self.dthreshold.view(-1, 1), self.float32_masks)
        dmask = dmask.view(grad.shape)
        self.dmask = dmask.detach()
        g = grad * dmask
        self.weight.grad = g.detach()
        return g

    def _mask_repr(self) -> str:
        return f"method={self.method!r}, float32_masks={self.float32_masks}"


class MaskedLinear(_MaskRule, nn.Module):
    """Y = X W_hat^T + b with W_hat = W * M (SPEC "Forward").

    Parameters
    ----------
    in_features, out_features : int
        W has shape (out_features, in_features).
    method : {"dfbst", "dst", "dense"}
        Mask rule; ``dense`` has no thresholds and no mask.
    bias : bool
        Whether b exists.
    float32_masks : bool
        True reproduces the reference's float32 masks M and D (gradients into
        them rounded to float32); False keeps them in the weight's dtype.

    Attributes
    ----------
    mask : torch.Tensor or None
        M of the last forward (detached), shaped like W.
    dmask : torch.Tensor or None
        D of the last :meth:`apply_backward_mask`, shaped like W.
    """

    def __init__(self, in_features: int, out_features: int, method: str = "dfbst",
                 bias: bool = True, float32_masks: bool = True) -> None:
        nn.Module.__init__(self)
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features))
        else:
            self.register_parameter("bias", None)
        self._init_mask_params(out_features, method, float32_masks)
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.masked_weight(), self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, {self._mask_repr()}")


def _pair(v) -> Tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


class MaskedConv2d(_MaskRule, nn.Module):
    """2-D convolution with W_hat = W * M; W has shape (out, in, kh, kw).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, padding : int or (int, int)
    bias : bool
    method : {"dfbst", "dst", "dense"}
    float32_masks : bool
        As for :class:`MaskedLinear`.

    Attributes
    ----------
    mask, dmask : torch.Tensor or None
        M and D, shaped like W.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 bias: bool = True, method: str = "dfbst", float32_masks: bool = True) -> None:
        nn.Module.__init__(self)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self._init_mask_params(out_channels, method, float32_masks)
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.masked_weight(), self.bias, stride=self.stride, padding=self.padding)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}, "
                f"{self._mask_repr()}")


def masked_layers(model: nn.Module) -> Iterator[Tuple[str, nn.Module]]:
    """Yield ``(dotted name, layer)`` for every masked layer of ``model``, in module order."""
    for name, module in model.named_modules():
        if isinstance(module, (MaskedLinear, MaskedConv2d)):
            yield name, module
