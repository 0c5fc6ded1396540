"""The engine: a dense NumPy network library with hand-written backward passes.

It knows nothing of masks; ``dfbst_np.sparse`` builds on it. One idea a file:
``linear`` (Linear, Conv2d), ``im2col`` (the textbook one), ``fast_im2col`` (the
transposed layout Conv2d runs on), ``transpose``, ``activations``, ``pooling``,
``batchnorm``, ``dropout``, ``shape``, ``containers``, ``residual``,
``loss``, ``optim``, ``clip``, ``init``, ``gradcheck``, ``checks``, ``module``.
"""
from .activations import ReLU
from .batchnorm import BatchNorm1d, BatchNorm2d
from .clip import clip_grad_norm
from .containers import Sequential
from .dropout import Dropout
from .init import manual_seed
from .linear import Conv2d, Linear, WeightLayer
from .loss import CrossEntropyLoss
from .module import Module
from .optim import SGD, Adam, MultiStepLR
from .pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from .residual import Residual
from .shape import Flatten

__all__ = ["Adam", "AdaptiveAvgPool2d", "AvgPool2d", "BatchNorm1d", "BatchNorm2d", "Conv2d",
           "CrossEntropyLoss", "Dropout", "Flatten", "Linear", "MaxPool2d", "Module",
           "MultiStepLR", "ReLU", "Residual", "SGD", "Sequential", "WeightLayer",
           "clip_grad_norm", "manual_seed"]
