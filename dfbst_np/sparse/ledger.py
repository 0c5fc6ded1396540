r"""The cost ledger: training FLOPs of the masked layers (SPEC, "Cost accounting").

Per masked layer and step, with :math:`N` the rows of the products (batch size,
times output positions for a convolution), :math:`M` the forward mask and
:math:`D` the backward mask of a weight :math:`W`:

.. math::
    \mathrm{forward} &= 2 N\, \mathrm{nnz}(M) \\
    \mathrm{backward\ data} &= 2 N\, \mathrm{nnz}(M) \\
    \mathrm{weight\ gradient} &= 2 N\, \mathrm{numel}(W) \ \text{(exact mode)}, \quad
        2 N\, \mathrm{nnz}(D) \ \text{(ideal sparse implementation)} \\
    \mathrm{dense\ training} &= 3 \cdot 2 N\, \mathrm{numel}(W)

A multiply-add counts as 2 FLOPs; biases, masks, thresholds and everything
outside the three weight products are not counted. The exact mode computes
:math:`A = dY^\top X` densely (SPEC section 1, "What is sparse"), so both
totals are reported. Pure NumPy counting; it knows nothing of layers or
methods.

The comparison methods (SPEC section 8) differ only in the weight gradient
they compute (``computed``, what this implementation pays, the *exact*
column) and need (``dmask``, the *ideal* column):

=========  ==============================  ==============================
method     computed (exact)                needed (ideal)
=========  ==============================  ==============================
dense,dst  every entry: 2 N numel(W)       every entry
dfbst      every entry                     D: 2 N nnz(D)
gmp        every entry, every step         every entry
set        M only: 2 N nnz(M)              M
rigl       M; every entry on update steps  M; every entry on update steps
=========  ==============================  ==============================

On RigL's update steps the dense gradient both chooses the grown weights and
updates the active ones, so the step's weight gradient costs
:math:`2 N\, \mathrm{numel}(W)` (RigL's own FLOP count, Evci et al. 2020:
:math:`2 f_S + f_D` on those steps).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, Iterable, Optional

import numpy as np

__all__ = ["LayerCost", "CostTotals", "layer_cost", "total_cost"]


def _ratio(num: int, den: int) -> float:
    # a layer with no work (N = 0 or an empty weight) has no meaningful ratio
    return num / den if den else float("nan")


@dataclass(frozen=True)
class LayerCost:
    r"""Training FLOPs of one masked layer for one step.

    Parameters
    ----------
    name : str
        The layer's dotted name.
    n : int
        :math:`N`, rows of the products: batch size (times output positions
        for a convolution).
    numel : int
        :math:`\mathrm{numel}(W)`.
    nnz_m : int
        :math:`\mathrm{nnz}(M)`, kept weights of the forward mask.
    nnz_d : int
        :math:`\mathrm{nnz}(D)`, kept entries of the weight gradient
        (``numel`` when the weight gradient is dense).
    nnz_exact : int or None
        Entries of the weight gradient this implementation computes;
        None (the default) means all of them, ``numel``.

    Attributes
    ----------
    forward_flops, backward_data_flops : int
        :math:`2 N\, \mathrm{nnz}(M)` each.
    weight_grad_flops_exact : int
        :math:`2 N\, \mathrm{numel}(W)` (:math:`2 N \cdot` ``nnz_exact`` when given).
    weight_grad_flops_ideal : int
        :math:`2 N\, \mathrm{nnz}(D)`.
    dense_flops : int
        :math:`3 \cdot 2 N\, \mathrm{numel}(W)`.
    exact_flops, ideal_flops : int
        forward + backward-data + the exact / ideal weight gradient.
    exact_ratio, ideal_ratio : float
        ``exact_flops / dense_flops`` and ``ideal_flops / dense_flops``
        (NaN when ``dense_flops`` is 0).
    """
    name: str
    n: int
    numel: int
    nnz_m: int
    nnz_d: int
    nnz_exact: Optional[int] = None
    forward_flops: int = field(init=False)
    backward_data_flops: int = field(init=False)
    weight_grad_flops_exact: int = field(init=False)
    weight_grad_flops_ideal: int = field(init=False)
    dense_flops: int = field(init=False)
    exact_flops: int = field(init=False)
    ideal_flops: int = field(init=False)
    exact_ratio: float = field(init=False)
    ideal_ratio: float = field(init=False)

    def __post_init__(self) -> None:
        if self.nnz_exact is None:
            object.__setattr__(self, "nnz_exact", self.numel)
        for key in ("n", "numel", "nnz_m", "nnz_d", "nnz_exact"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"LayerCost {self.name!r}: {key} must be a non-negative "
                                 f"integer, got {value!r}")
            object.__setattr__(self, key, int(value))   # Python ints cannot overflow
        for key in ("nnz_m", "nnz_d", "nnz_exact"):
            if getattr(self, key) > self.numel:
                raise ValueError(f"LayerCost {self.name!r}: {key}={getattr(self, key)} "
                                 f"exceeds numel={self.numel}")
        n, numel = self.n, self.numel
        # Forward Y = X W_hat^T and backward-data dX = dY W_hat touch nnz(M) weights per row.
        forward = 2 * n * self.nnz_m
        backward_data = 2 * n * self.nnz_m
        # Weight gradient A = dY^T X: what this implementation computes (every entry
        # unless a method computes it on a support), only D's support ideally.
        grad_exact = 2 * n * self.nnz_exact
        grad_ideal = 2 * n * self.nnz_d
        dense = 3 * 2 * n * numel
        values = dict(
            forward_flops=forward, backward_data_flops=backward_data,
            weight_grad_flops_exact=grad_exact, weight_grad_flops_ideal=grad_ideal,
            dense_flops=dense,
            exact_flops=forward + backward_data + grad_exact,
            ideal_flops=forward + backward_data + grad_ideal)
        values["exact_ratio"] = _ratio(values["exact_flops"], dense)
        values["ideal_ratio"] = _ratio(values["ideal_flops"], dense)
        for key, value in values.items():
            object.__setattr__(self, key, value)

    def as_dict(self) -> Dict:
        """All fields, counts and ratios, as a plain dict."""
        return asdict(self)


@dataclass(frozen=True)
class CostTotals:
    """Sums of :class:`LayerCost` fields over layers, with ratios of the sums.

    ``n`` is not summed (layers have different N); ``layers`` counts them.
    The ratios are ratios of the totals, i.e. FLOP-weighted over layers.
    """
    layers: int
    numel: int
    nnz_m: int
    nnz_d: int
    forward_flops: int
    backward_data_flops: int
    weight_grad_flops_exact: int
    weight_grad_flops_ideal: int
    dense_flops: int
    exact_flops: int
    ideal_flops: int
    exact_ratio: float
    ideal_ratio: float

    def as_dict(self) -> Dict:
        """All totals as a plain dict."""
        return asdict(self)


_SUMMED = ("numel", "nnz_m", "nnz_d", "forward_flops", "backward_data_flops",
           "weight_grad_flops_exact", "weight_grad_flops_ideal", "dense_flops",
           "exact_flops", "ideal_flops")


def _count(name: str, what: str, pattern, shape) -> int:
    pattern = np.asarray(pattern)
    if pattern.shape != shape:
        raise ValueError(f"layer_cost {name!r}: {what} shape {pattern.shape} differs from "
                         f"mask shape {shape}")
    return int(np.count_nonzero(pattern))


def layer_cost(name: str, n: int, mask: np.ndarray, dmask: Optional[np.ndarray] = None,
               computed: Optional[np.ndarray] = None) -> LayerCost:
    r"""Count one layer's step from its masks.

    Parameters
    ----------
    name : str
    n : int
        :math:`N` (batch size, times output positions for a convolution).
    mask : ndarray
        Forward mask :math:`M` in the weight's shape (nonzero = kept). For an
        unmasked (``dense`` method) layer pass ``np.ones(weight.shape)``.
    dmask : ndarray or None
        Backward mask :math:`D`, same shape as ``mask``; None means the
        weight gradient is dense, :math:`\mathrm{nnz}(D) = \mathrm{numel}(W)`.
    computed : ndarray or None
        The entries of the weight gradient this implementation computes
        (e.g. M for SET), same shape as ``mask``; None means all of them.

    Returns
    -------
    LayerCost
    """
    mask = np.asarray(mask)
    numel = int(mask.size)
    nnz_m = int(np.count_nonzero(mask))
    nnz_d = numel if dmask is None else _count(name, "dmask", dmask, mask.shape)
    nnz_exact = numel if computed is None else _count(name, "computed", computed, mask.shape)
    return LayerCost(name=name, n=n, numel=numel, nnz_m=nnz_m, nnz_d=nnz_d, nnz_exact=nnz_exact)


def total_cost(costs: Iterable[LayerCost]) -> CostTotals:
    """Sum a list of :class:`LayerCost` into :class:`CostTotals`.

    An empty list gives zero counts and NaN ratios.
    """
    costs = list(costs)
    sums = {key: sum(getattr(c, key) for c in costs) for key in _SUMMED}
    return CostTotals(layers=len(costs), **sums,
                      exact_ratio=_ratio(sums["exact_flops"], sums["dense_flops"]),
                      ideal_ratio=_ratio(sums["ideal_flops"], sums["dense_flops"]))
