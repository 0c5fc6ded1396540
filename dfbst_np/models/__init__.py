"""The four networks of the paper, composed from engine and masked layers.

``build(name, method=..., num_classes=..., dtype=...)`` takes the names of the
reference's ``--model`` flag.
"""
from __future__ import annotations

import numpy as np

from ..nn.init import as_rng
from .lenet import LeNet5, LeNet300_100
from .resnet import BasicBlock, ResNet18
from .vgg import VGG16

MODELS = {"lenet300_100": LeNet300_100, "lenet_5": LeNet5, "vgg16": VGG16, "resnet18": ResNet18}
INPUT_SHAPES = {"lenet300_100": (1, 28, 28), "lenet_5": (1, 28, 28),
                "vgg16": (3, 32, 32), "resnet18": (3, 32, 32)}


def build(name: str, method: str = "dfbst", num_classes: int = 10, dtype=np.float32, rng=None,
          estimator: str = "long_tailed", float32_masks: bool = False, kernel_path=None,
          weight_grad: str = "exact"):
    """Build a model by its reference name.

    Parameters
    ----------
    name : "lenet300_100", "lenet_5", "vgg16" or "resnet18".
    method : "dense", "dst" or "dfbst": the method of every masked layer.
    rng : numpy Generator or seed for the initial weights (default seed 0).
    float32_masks : round the gradients that reach a mask to float32, as the
        reference's float32 masks do (for exact parity in float64).
    kernel_path : "dense", "sparse" or "auto" for every masked layer (None:
        the global default of ``dfbst_np.sparse.kernels``).
    weight_grad : "exact" (the paper's algorithm) or "predicted" (DFBST's
        accelerated approximation, dfbst only; see ``dfbst_np.sparse.masked``).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes <= 0:
        raise ValueError(f"build({name!r}): num_classes must be a positive integer, got {num_classes!r}")
    layer_kw = dict(method=method, dtype=dtype, rng=as_rng(0 if rng is None else rng), estimator=estimator,
                    float32_masks=float32_masks, kernel_path=kernel_path, weight_grad=weight_grad)
    return MODELS[name](num_classes=num_classes, **layer_kw)
