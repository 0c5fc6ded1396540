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

import importlib.util as _importlib_util

from . import methods, models, nn, sparse, train
from .train import backend as _run_backends
from .sparse.masked import MaskedConv2d, MaskedLinear
from .train.trainer import Trainer, evaluate

__all__ = ["MaskedConv2d", "MaskedLinear", "Trainer", "evaluate", "methods", "models", "nn",
           "sparse", "train"]


def _torch_backend():
    """The run loop's torch backend, imported when a run chooses it (the package, not
    ``dfbst_np.train``, knows where it lives: train never imports reference)."""
    if _importlib_util.find_spec("torch") is None:
        raise _run_backends.BackendUnavailable("--backend torch needs PyTorch, which is not "
                                               "installed; install it with: pip install torch")
    from .reference import backend
    return backend


_run_backends.register_backend("torch", _torch_backend)
