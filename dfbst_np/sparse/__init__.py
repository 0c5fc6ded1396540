"""What makes DFBST: masks, estimators, the gradient rules, kernels and costs.

One idea a file:

* ``step``          H and the straight-through estimators h
* ``mask_rule``     the forward mask M, the reset, and the gradient rule for dW and dt
* ``entries``       values on a support (the rule's view of dW) and 0/1 patterns (D)
* ``backward_mask`` DFBST's backward mask D, the statistic V and dV/du
* ``masked``        MaskedLinear and MaskedConv2d (engine layer + mask rule)
* ``kernels``       every product in one namespace (re-exports the five below)
* ``paths``         the ``path`` argument: "dense", "sparse", "auto", and its default
* ``support``       the CSR support index (Support, support_structure)
* ``products``      forward, backward-data and full weight-gradient products, dense or CSR
* ``sampled``       the weight gradient on a support only (sampled product)
* ``costs``         the cost model behind "auto" (crossover densities)
* ``fused``         row-wise passes over W (rank-1 subtraction, row sums by BLAS)
* ``crossover``     measuring where sparse products start to pay (calibrates ``costs``)
* ``ledger``        training FLOPs per layer and step, exact and ideal

Each fast function names its textbook twin in :mod:`dfbst_np.textbook`.
"""
# Functions named like their modules (step, backward_mask) stay in the modules,
# so that ``dfbst_np.sparse.step`` is always the module.
from .backward_mask import BackwardMask
from .entries import Entries, Pattern
from .mask_rule import forward_mask, layer_grads, threshold_penalty
from .step import ESTIMATORS

_MASKED = ("MaskedConv2d", "MaskedLayer", "MaskedLinear", "masked_layers")


def __getattr__(name):
    # The masked layers are made from dfbst_np.methods, which is built on the
    # modules above: importing them here eagerly would be an import cycle.
    if name in _MASKED:
        from . import masked
        return getattr(masked, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
