"""LeNet-300-100 and LeNet-5, as the reference means them (SPEC section 3).

Inputs are (N, 1, 28, 28) images. State-dict names: ``fc1..fc3`` and
``conv1, conv2, fc3, fc4``.
"""
from __future__ import annotations

from ..nn.activations import ReLU
from ..nn.pooling import MaxPool2d
from ..nn.shape import Flatten
from ..sparse.masked import MaskedConv2d, MaskedLinear
from .chain import Chain


class LeNet300_100(Chain):
    """Flatten, masked 784-300-100-classes with ReLU between."""

    order = ("flatten", "fc1", "relu1", "fc2", "relu2", "fc3")

    def __init__(self, num_classes: int = 10, **layer_kw) -> None:
        super().__init__()
        dtype = layer_kw["dtype"]
        self.flatten = Flatten(dtype=dtype)
        self.fc1 = MaskedLinear(784, 300, **layer_kw)
        self.relu1 = ReLU(dtype=dtype)
        self.fc2 = MaskedLinear(300, 100, **layer_kw)
        self.relu2 = ReLU(dtype=dtype)
        self.fc3 = MaskedLinear(100, num_classes, **layer_kw)


class LeNet5(Chain):
    """conv 1->20 5x5, ReLU, maxpool 2; conv 20->50 5x5, ReLU, maxpool 2; fc 800->500, ReLU; fc 500->classes."""

    order = ("conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "flatten",
             "fc3", "relu3", "fc4")

    def __init__(self, num_classes: int = 10, **layer_kw) -> None:
        super().__init__()
        dtype = layer_kw["dtype"]
        self.conv1 = MaskedConv2d(1, 20, 5, **layer_kw)
        self.relu1 = ReLU(dtype=dtype)
        self.pool1 = MaxPool2d(2, dtype=dtype)
        self.conv2 = MaskedConv2d(20, 50, 5, **layer_kw)
        self.relu2 = ReLU(dtype=dtype)
        self.pool2 = MaxPool2d(2, dtype=dtype)
        self.flatten = Flatten(dtype=dtype)
        self.fc3 = MaskedLinear(800, 500, **layer_kw)
        self.relu3 = ReLU(dtype=dtype)
        self.fc4 = MaskedLinear(500, num_classes, **layer_kw)
