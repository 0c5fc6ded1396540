"""VGG-16 for CIFAR (SPEC section 3): masked 3x3 convs without bias, each with
BatchNorm2d (weight 0.5, bias 0) and ReLU; AvgPool2d(2); a masked classifier.

State-dict names follow the reference: ``feature.N.*`` and
``classifier.0/1/3.*``. For 32x32 inputs the features end at 2x2, and the
average pool leaves the 512 values the classifier takes.
"""
from __future__ import annotations

from ..nn.activations import ReLU
from ..nn.batchnorm import BatchNorm1d, BatchNorm2d
from ..nn.containers import Sequential
from ..nn.pooling import AvgPool2d, MaxPool2d
from ..nn.shape import Flatten
from ..sparse.masked import MaskedConv2d, MaskedLinear
from .chain import Chain

CFG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


class VGG16(Chain):
    order = ("feature", "pool", "flatten", "classifier")

    def __init__(self, num_classes: int = 10, cfg=CFG16, **layer_kw) -> None:
        super().__init__()
        dtype = layer_kw["dtype"]
        layers, c_in = [], 3
        for v in cfg:
            if v == "M":
                layers.append(MaxPool2d(2, stride=2, dtype=dtype))
            else:
                layers += [MaskedConv2d(c_in, v, 3, padding=1, bias=False, **layer_kw),
                           BatchNorm2d(v, weight_init=0.5, dtype=dtype), ReLU(dtype=dtype)]
                c_in = v
        self.feature = Sequential(*layers)
        self.pool = AvgPool2d(2, dtype=dtype)
        self.flatten = Flatten(dtype=dtype)
        self.classifier = Sequential(MaskedLinear(c_in, 512, **layer_kw),
                                     BatchNorm1d(512, dtype=dtype), ReLU(dtype=dtype),
                                     MaskedLinear(512, num_classes, **layer_kw))
