"""dfbst_np: Dynamic Forward and Backward Sparse Training in plain NumPy.

Every forward and backward pass is written out by hand; see docs/SPEC.md for the
equations. Layers of the package, each importing only those above it here:

* ``dfbst_np.nn``        the dense engine (layers, loss, optimisers)
* ``dfbst_np.methods``   the sparse-training methods (dense, dst, dfbst, ...) as plug-ins
* ``dfbst_np.sparse``    masks, estimators, the DFBST gradient rule, kernels
* ``dfbst_np.models``    LeNet-300-100, LeNet-5, VGG-16, ResNet-18
* ``dfbst_np.train``     the Trainer, data, checkpoints, metrics
* ``dfbst_np.reference`` the PyTorch reference (the only module that imports torch)
"""
__version__ = "0.1.0"

import importlib

from .backend_registry import register_backend as _register_backend

__all__ = ["MaskedConv2d", "MaskedLinear", "Trainer", "evaluate", "methods", "models", "nn",
           "sparse", "train"]
# Loaded on first use (PEP 562), so that ``python -m dfbst_np`` starts at once and a
# Ctrl-C while NumPy loads reaches the command line's handler (one line, exit 130).
_WHERE = {"MaskedConv2d": "sparse.masked", "MaskedLinear": "sparse.masked",
          "Trainer": "train.trainer", "evaluate": "train.trainer"}


def __getattr__(name):
    if name in ("methods", "models", "nn", "sparse", "train"):
        return importlib.import_module(f".{name}", __name__)
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)


def _torch_backend():
    """The run loop's torch backend, imported when a run chooses it (the package, not
    ``dfbst_np.train``, knows where it lives: train never imports reference)."""
    from .torch_import import TorchUnavailable, require_torch
    from .train.backend import BackendUnavailable
    try:
        require_torch("--backend torch")
    except TorchUnavailable as e:
        raise BackendUnavailable(str(e)) from None
    from .reference import backend
    return backend


_register_backend("torch", _torch_backend)
