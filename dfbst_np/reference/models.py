"""The four reference architectures of SPEC section 3, built from masked layers.

State-dict names, shapes and order equal the authors' models, so their
checkpoints load unchanged. Every model takes images (N, C, H, W).

Initialisation follows the reference code, including the order in which it
draws from torch's global generator, so ``torch.manual_seed(s)`` followed by
:func:`build` gives the reference's initial weights (models are built in
float32, as the reference is, and then cast to ``dtype``).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import models as np_models
from .layers import MaskedConv2d, MaskedLinear


class LeNet300_100(nn.Module):
    """Masked MLP 784-300-100-classes with ReLU; input (N, 1, 28, 28), flattened."""

    def __init__(self, method: str = "dfbst", num_classes: int = 10, float32_masks: bool = True) -> None:
        super().__init__()
        kw = dict(method=method, float32_masks=float32_masks)
        self.fc1 = MaskedLinear(784, 300, **kw)
        self.fc2 = MaskedLinear(300, 100, **kw)
        self.fc3 = MaskedLinear(100, num_classes, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class LeNet5(nn.Module):
    """Masked conv 1->20 5x5, ReLU, maxpool 2; conv 20->50 5x5, ReLU, maxpool 2;
    fc 800->500, ReLU; fc 500->classes. Input (N, 1, 28, 28).
    """

    def __init__(self, method: str = "dfbst", num_classes: int = 10, float32_masks: bool = True) -> None:
        super().__init__()
        kw = dict(method=method, float32_masks=float32_masks)
        self.conv1 = MaskedConv2d(1, 20, 5, **kw)
        self.conv2 = MaskedConv2d(20, 50, 5, **kw)
        self.fc3 = MaskedLinear(4 * 4 * 50, 500, **kw)
        self.fc4 = MaskedLinear(500, num_classes, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2, 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2, 2)
        x = F.relu(self.fc3(x.reshape(x.shape[0], -1)))
        return self.fc4(x)


VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


class VGG16(nn.Module):
    """VGG-16 for CIFAR (SPEC section 3).

    ``feature``: for each number in :data:`VGG16_CFG` a masked 3x3 conv
    (padding 1, no bias), BatchNorm2d (weight 0.5, bias 0) and ReLU; for each
    "M" a 2x2 max pool. The last block has no max pool: a 32x32 input leaves
    ``feature`` at 2x2, and the forward applies AvgPool2d(2) there before
    flattening to 512. ``classifier``: masked 512->512, BatchNorm1d (PyTorch's
    default init), ReLU, masked 512->classes.
    """

    def __init__(self, method: str = "dfbst", num_classes: int = 10, float32_masks: bool = True) -> None:
        super().__init__()
        kw = dict(method=method, float32_masks=float32_masks)
        layers = []
        in_ch = 3
        for v in VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [MaskedConv2d(in_ch, v, 3, padding=1, bias=False, **kw),
                           nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                in_ch = v
        self.feature = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            MaskedLinear(in_ch, 512, **kw),
            nn.BatchNorm1d(512),
            nn.ReLU(inplace=True),
            MaskedLinear(512, num_classes, **kw),
        )
        # The reference initialises every masked layer a second time after
        # construction; repeating it keeps seeded builds identical to it.
        for m in self.modules():
            if isinstance(m, (MaskedConv2d, MaskedLinear)):
                m.reset_parameters()
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 0.5)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(self.feature(x), 2)
        return self.classifier(x.reshape(x.shape[0], -1))


class BasicBlock(nn.Module):
    """ResNet basic block: conv3x3-BN-ReLU-conv3x3-BN, plus identity or downsample, ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None, method: str = "dfbst",
                 float32_masks: bool = True) -> None:
        super().__init__()
        kw = dict(method=method, float32_masks=float32_masks)
        self.conv1 = MaskedConv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False, **kw)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = MaskedConv2d(planes, planes, 3, stride=1, padding=1, bias=False, **kw)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class ResNet18(nn.Module):
    """torchvision's ResNet-18 layout with masked convolutions (SPEC section 3).

    conv1 7x7 stride 2 padding 3, bn1, ReLU, max pool 3 stride 2 padding 1,
    ``layer1..layer4`` of two :class:`BasicBlock` each (64, 128, 256, 512
    channels; stride 2 from layer2 on, with a masked 1x1 conv + BN as
    ``downsample``), adaptive average pool to 1x1 and a plain, unmasked
    ``fc`` Linear 512->classes. BN weights 1, biases 0, every block's bn2
    weight 0.
    """

    def __init__(self, method: str = "dfbst", num_classes: int = 10, float32_masks: bool = True) -> None:
        super().__init__()
        kw = dict(method=method, float32_masks=float32_masks)
        self.conv1 = MaskedConv2d(3, 64, 7, stride=2, padding=3, bias=False, **kw)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_planes = 64
        for k, (planes, stride) in enumerate(((64, 1), (128, 2), (256, 2), (512, 2)), start=1):
            downsample = None
            if stride != 1 or in_planes != planes:
                # Built before the block, as in the reference, so the 1x1
                # conv draws its initial weights before the block's convs.
                downsample = nn.Sequential(
                    MaskedConv2d(in_planes, planes, 1, stride=stride, bias=False, **kw),
                    nn.BatchNorm2d(planes))
            blocks = [BasicBlock(in_planes, planes, stride, downsample, **kw),
                      BasicBlock(planes, planes, 1, None, **kw)]
            setattr(self, f"layer{k}", nn.Sequential(*blocks))
            in_planes = planes
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.avgpool(x)
        return self.fc(x.reshape(x.shape[0], -1))


#: The torch twin of every model of dfbst_np's registry: the class of the same name here.
MODELS = {name: globals()[m.cls.__name__] for name, m in np_models.REGISTRY.items()}


def build(name: str, method: str = "dfbst", num_classes: int = 10,
          dtype: torch.dtype = torch.float64, float32_masks: bool = True) -> nn.Module:
    """Build a reference model by the reference's ``--model`` name.

    Parameters
    ----------
    name : {"lenet300_100", "lenet_5", "vgg16", "resnet18"}
    method : {"dfbst", "dst", "dense"}
        Mask rule of every masked layer (ResNet-18's ``fc`` is never masked).
    num_classes : int
    dtype : torch.dtype
        Floating dtype of parameters and buffers. The model is initialised in
        float32, like the reference, and then cast.
    float32_masks : bool
        See :class:`~dfbst_np.reference.layers.MaskedLinear`.

    Returns
    -------
    torch.nn.Module
        The model, in training mode.
    """
    try:
        cls = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS)}") from None
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"build({name!r}): dtype must be a floating torch.dtype, got {dtype!r}")
    model = cls(method=method, num_classes=num_classes, float32_masks=float32_masks)
    return model.to(dtype).train()
