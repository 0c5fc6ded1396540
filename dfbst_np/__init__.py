"""dfbst_np: Dynamic Forward and Backward Sparse Training in plain NumPy.

Every forward and backward pass is written out by hand; see docs/SPEC.md for the
equations. Layers of the package, each importing only those above it here:

* ``dfbst_np.nn``        the dense engine (layers, loss, optimisers)
* ``dfbst_np.sparse``    masks, estimators, the DFBST gradient rule, kernels
* ``dfbst_np.models``    LeNet-300-100, LeNet-5, VGG-16, ResNet-18
* ``dfbst_np.train``     the Trainer, data, checkpoints, metrics
* ``dfbst_np.reference`` the PyTorch reference (the only module that imports torch)
"""
__version__ = "0.1.0"

from . import models, nn, sparse, train
from .sparse.masked import MaskedConv2d, MaskedLinear
from .train.trainer import Trainer, evaluate

__all__ = ["MaskedConv2d", "MaskedLinear", "Trainer", "evaluate", "models", "nn", "sparse", "train"]
