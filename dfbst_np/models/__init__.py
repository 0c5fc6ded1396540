"""The four networks of the paper, composed from engine and masked layers, and
the one list of model names (:data:`REGISTRY`) that the CLI, the run config,
the plots, the PyTorch reference and the verifier read.

``build(name, method=..., num_classes=..., dtype=...)`` takes the names of the
reference's ``--model`` flag.
"""
from __future__ import annotations

from typing import Dict, NamedTuple, Tuple

import numpy as np

from .. import methods
from ..methods import Settings
from ..nn.init import as_rng
from ..sparse.masked import masked_layers
from .lenet import LeNet5, LeNet300_100
from .resnet import BasicBlock, ResNet18
from .vgg import VGG16


class ModelInfo(NamedTuple):
    """One architecture: its class, a reader's title, its input shape (C, H, W),
    the data it is trained on by default, its classes, and the name of its last
    weight (which tells the verifier the architecture of a state dict)."""
    cls: type
    title: str
    input_shape: Tuple[int, int, int]
    dataset: str
    num_classes: int
    last_weight: str


#: Every model by name, in the order the CLI lists them.
REGISTRY: Dict[str, ModelInfo] = {
    "lenet300_100": ModelInfo(LeNet300_100, "LeNet-300-100", (1, 28, 28), "sample", 10, "fc3.weight"),
    "lenet_5": ModelInfo(LeNet5, "LeNet-5", (1, 28, 28), "sample", 10, "fc4.weight"),
    "vgg16": ModelInfo(VGG16, "VGG-16", (3, 32, 32), "cifar10", 10, "classifier.3.weight"),
    "resnet18": ModelInfo(ResNet18, "ResNet-18", (3, 32, 32), "cifar100", 100, "fc.weight"),
}
NAMES = tuple(REGISTRY)
INPUT_SHAPES = {name: info.input_shape for name, info in REGISTRY.items()}


def info(name: str) -> ModelInfo:
    """The registry entry of ``name``; an unknown name is a ValueError listing the known ones."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {name!r}; expected one of {list(NAMES)}") from None


def build(name: str, method="dfbst", num_classes: int = 10, dtype=np.float32, rng=None,
          estimator: str = "long_tailed", float32_masks: bool = False, kernel_path=None,
          weight_grad: str = "exact", textbook: bool = False):
    """Build a model by its reference name.

    Parameters
    ----------
    name : "lenet300_100", "lenet_5", "vgg16" or "resnet18" (:data:`NAMES`).
    method : a registered method name (``dfbst_np.methods.names()``), a
        Method, or an implementation object (then ``textbook`` is not used).
    rng : numpy Generator or seed for the initial weights (default seed 0).
    estimator, float32_masks, weight_grad : the model-wide
        :class:`~dfbst_np.methods.Settings`, made once and shared by every
        masked layer. float32_masks rounds the gradients that reach a mask to
        float32, as the reference's float32 masks do (for exact parity in
        float64); weight_grad "predicted" is DFBST's accelerated approximation.
    kernel_path : "dense", "sparse" or "auto" for every masked layer (None:
        the global default of ``dfbst_np.sparse.kernels``).
    textbook : give every masked layer the method's textbook implementation
        (plain NumPy through :mod:`dfbst_np.textbook`; same numbers, slower).
    """
    cls = info(name).cls
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes <= 0:
        raise ValueError(f"build({name!r}): num_classes must be a positive integer, got {num_classes!r}")
    impl = methods.implementation(method, "textbook" if textbook else "fast")
    settings = Settings(estimator=estimator, float32_masks=float32_masks, weight_grad=weight_grad)
    layer_kw = dict(method=impl, dtype=dtype, rng=as_rng(0 if rng is None else rng),
                    settings=settings, kernel_path=kernel_path)
    model = cls(num_classes=num_classes, **layer_kw)
    impl.setup(masked_layers(model))
    return model
