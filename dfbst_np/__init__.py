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

import importlib

__all__ = ["MaskedConv2d", "MaskedLinear", "Trainer", "evaluate", "models", "nn", "sparse", "train"]
# Loaded on first use (PEP 562), so that ``python -m dfbst_np`` starts at once and a
# Ctrl-C while NumPy loads reaches the command line's handler (one line, exit 130).
_WHERE = {"MaskedConv2d": "sparse.masked", "MaskedLinear": "sparse.masked",
          "Trainer": "train.trainer", "evaluate": "train.trainer"}


def __getattr__(name):
    if name in ("models", "nn", "sparse", "train"):
        return importlib.import_module(f".{name}", __name__)
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
