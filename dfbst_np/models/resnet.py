"""ResNet-18 for CIFAR-100 in torchvision's layout, with masked convolutions.

7x7 stride-2 conv, BN, ReLU, 3x3 stride-2 max pool, four stages of two
basic blocks (64, 128, 256, 512 channels), global average pool and a plain
Linear. BN weights 1 and biases 0, except every block's ``bn2`` weight, which
starts at 0 so each residual block starts as the identity.
"""
from __future__ import annotations

import numpy as np

from ..nn.activations import ReLU
from ..nn.batchnorm import BatchNorm2d
from ..nn.containers import Sequential
from ..nn.linear import Linear
from ..nn.module import Module
from ..nn.pooling import AdaptiveAvgPool2d, MaxPool2d
from ..nn.shape import Flatten
from ..sparse.masked import MaskedConv2d
from .chain import Chain


class BasicBlock(Module):
    r"""Two masked 3x3 convs with a shortcut.

    .. math::
        y = \mathrm{relu}(\mathrm{bn_2}(\mathrm{conv_2}(\mathrm{relu}(\mathrm{bn_1}(\mathrm{conv_1}(x)))))
            + s(x)), \qquad s = \text{identity or downsample}

    Shapes: x (N, C_in, H, W) -> y (N, C_out, H/stride, W/stride).
    """

    def __init__(self, c_in: int, c_out: int, stride: int, **layer_kw) -> None:
        super().__init__()
        dtype = layer_kw["dtype"]
        self.conv1 = MaskedConv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False, **layer_kw)
        self.bn1 = BatchNorm2d(c_out, dtype=dtype)
        self.relu1 = ReLU(dtype=dtype)
        self.conv2 = MaskedConv2d(c_out, c_out, 3, padding=1, bias=False, **layer_kw)
        self.bn2 = BatchNorm2d(c_out, weight_init=0.0, dtype=dtype)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = Sequential(
                MaskedConv2d(c_in, c_out, 1, stride=stride, bias=False, **layer_kw),
                BatchNorm2d(c_out, dtype=dtype))
        self.relu2 = ReLU(dtype=dtype)

    def forward(self, x: np.ndarray) -> np.ndarray:
        out = self.relu1.forward(self.bn1.forward(self.conv1.forward(x)))
        out = self.bn2.forward(self.conv2.forward(out))
        shortcut = x if self.downsample is None else self.downsample.forward(x)
        return self.relu2.forward(out + shortcut)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        # The residual add copies the gradient to both branches; they add up at x.
        d_sum = self.relu2.backward(dy)
        d_main = self.conv1.backward(self.bn1.backward(self.relu1.backward(
            self.conv2.backward(self.bn2.backward(d_sum)))))
        d_short = d_sum if self.downsample is None else self.downsample.backward(d_sum)
        return d_main + d_short


class ResNet18(Chain):
    order = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4",
             "avgpool", "flatten", "fc")

    def __init__(self, num_classes: int = 100, **layer_kw) -> None:
        super().__init__()
        dtype = layer_kw["dtype"]
        self.conv1 = MaskedConv2d(3, 64, 7, stride=2, padding=3, bias=False, **layer_kw)
        self.bn1 = BatchNorm2d(64, dtype=dtype)
        self.relu = ReLU(dtype=dtype)
        self.maxpool = MaxPool2d(3, stride=2, padding=1, dtype=dtype)
        c_in = 64
        for k, (c_out, stride) in enumerate([(64, 1), (128, 2), (256, 2), (512, 2)], start=1):
            setattr(self, f"layer{k}", Sequential(BasicBlock(c_in, c_out, stride, **layer_kw),
                                                  BasicBlock(c_out, c_out, 1, **layer_kw)))
            c_in = c_out
        self.avgpool = AdaptiveAvgPool2d(1, dtype=dtype)
        self.flatten = Flatten(dtype=dtype)
        self.fc = Linear(512, num_classes, dtype=dtype, rng=layer_kw.get("rng"))
