r"""What GMP, SET and RigL share: a stored mask per layer, its density, its life cycle.

Each layer keeps its forward mask as a boolean array ``layer.state.keep``
(out, fan_in): M is not computed from W in the forward pass, it is the
method's memory, changed only by the method's topology update (a trainer
hook after the optimiser step, or at the end of an epoch). The masks are set
up once per model (:meth:`TopologyHooks.setup`) from per-layer densities:

* ``distribution="erk"`` (default): :func:`dfbst_np.textbook.erk_densities`,
  :math:`d_l = \varepsilon \sum s_l / \prod s_l` with one overall density;
* ``distribution="uniform"``: every layer the same density.

Invariants the hooks keep (tested): W is exactly 0 off the mask and so is its
momentum; a weight that leaves or enters the mask has its momentum set to 0
(``optimizer.zero_entries``). The masks and each layer's random seed are the
method's checkpoint state, so a resumed run repeats the uninterrupted one.

A method's options (density, schedule, fractions) live on its implementation
object; :meth:`TopologyHooks.configured` returns a copy with other options,
which ``models.build(..., method=impl)`` hands to the layers.
"""
from __future__ import annotations

import copy
import math
from typing import Dict, Mapping

import numpy as np

from .. import textbook as tb
from ..sparse.entries import Pattern
from ..sparse.ledger import LayerCost
from ..sparse.mask_rule import ForwardMask

__all__ = ["DISTRIBUTIONS", "TopologyHooks", "FastMaskHooks", "TextbookMaskHooks",
           "schedule_step", "layer_init"]

DISTRIBUTIONS = ("erk", "uniform")


def _fraction(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1


#: option -> (rule, what it must be); every method checks the options it has.
_RULES = {
    "density": (lambda v: _fraction(v) and v > 0, "a number in (0, 1]"),
    "distribution": (lambda v: v in DISTRIBUTIONS, f"one of {list(DISTRIBUTIONS)}"),
    "zeta": (lambda v: _fraction(v) and v < 1, "a number in [0, 1)"),
    "drop_fraction": (_fraction, "a number in [0, 1]"),
    "update_interval": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
                        "a positive integer (steps)"),
    "prune_start": (_fraction, "a fraction of the run's steps in [0, 1]"),
    "update_end": (lambda v: _fraction(v) and v > 0, "a fraction of the run's steps in (0, 1]"),
}


def schedule_step(fraction: float, total: int) -> int:
    """The step (counted from 1, after that many optimiser steps) at ``fraction`` of ``total``."""
    return int(round(fraction * total))


def layer_init(layer):
    r"""``init(rng, n)``: n new weights from the layer's initialiser (PyTorch's
    kaiming_uniform with :math:`a = \sqrt 5`: uniform in :math:`\pm 1/\sqrt{\text{fan\_in}}`)."""
    bound = 1.0 / math.sqrt(layer.weight2d.shape[1])
    return lambda rng, n: rng.uniform(-bound, bound, n).astype(layer.dtype)


class TopologyHooks:
    """The hooks GMP, SET and RigL share, for both implementations (a mixin).

    A method sets ``OPTIONS`` ({option: default}) and supplies
    :meth:`initial_keep` and its update hooks.
    """

    OPTIONS: Mapping[str, object] = {"density": 0.1, "distribution": "erk"}

    def __init__(self, **options) -> None:
        self.options = self.check_options(dict(self.OPTIONS, **options))

    # -- options ------------------------------------------------------------
    @classmethod
    def check_options(cls, options: Dict, names: Mapping[str, str] = None) -> Dict:
        """Each option known to the method and valid; a ValueError names the first bad one
        (as ``names`` calls it, e.g. ``{"zeta": "--zeta"}``; default "option zeta")."""
        names = names or {}
        call = lambda key: names.get(key, f"option {key}")     # noqa: E731
        for key, value in options.items():
            if key not in cls.OPTIONS:
                raise ValueError(f"unknown option {key!r}; this method takes {sorted(cls.OPTIONS)}")
            ok, what = _RULES[key]
            if not ok(value):
                raise ValueError(f"{call(key)} must be {what}, got {value!r}")
        if "prune_start" in options and options["prune_start"] > options["update_end"]:
            raise ValueError(f"{call('prune_start')} ({options['prune_start']}) must not come after "
                             f"{call('update_end')} ({options['update_end']})")
        return options

    def configured(self, **options):
        """A copy of this implementation with ``options`` changed (same method, same kind)."""
        other = copy.copy(self)
        other.options = self.check_options(dict(self.options, **options))
        return other

    # -- the mask's life ------------------------------------------------------
    def new_state(self, layer):
        state = super().new_state(layer)
        state.keep = None          # M as bool (out, fan_in): the method's memory
        state.seed = None          # the layer's seed for the method's random draws
        return state

    def densities(self, layers):
        """Per-layer densities from ``density`` and ``distribution``."""
        d = self.options["density"]
        if self.options["distribution"] == "uniform":
            return [float(d)] * len(layers)
        return tb.erk_densities([layer.weight.shape for _, layer in layers], d)

    def initial_keep(self, layer, density: float) -> np.ndarray:  # pragma: no cover - abstract
        """The layer's first mask, bool (out, fan_in)."""
        raise NotImplementedError

    def setup(self, layers) -> None:
        """Every layer's mask from its density (layers already set up keep theirs);
        W is set to 0 off the mask."""
        if all(layer.state.keep is not None for _, layer in layers):
            return
        for (_, layer), d in zip(layers, self.densities(layers)):
            st = layer.state
            if st.keep is None:
                st.seed = int(layer.rng.integers(2 ** 62))
                st.keep = self.initial_keep(layer, d)
                layer.weight2d[~st.keep] = 0

    def default_weight_grad(self, settings) -> str:
        return "mask"              # SET and RigL between updates: the kept weights' gradient

    def zero_momentum(self, trainer, name: str, layer, where2d: np.ndarray) -> None:
        """Momentum 0 where ``where2d`` (bool, (out, fan_in)): weights that left or entered M."""
        trainer.optimizer.zero_entries(f"{name}.weight", where2d.reshape(layer.weight.shape))

    def gradient_mask(self, trainer):
        """The weight gradient is used as computed; D is recorded as what was paid for:
        M on a "mask" step (``bdensity`` = density of M), none (dense) on an "exact" one."""
        for _, layer in trainer.layers:
            paid = None if layer.last_weight_grad == "exact" else Pattern(
                keep=layer.state.keep.copy(), nnz=layer.mask_nnz)
            layer.set_backward_mask(paid)
        return None

    # -- costs and checkpoints ----------------------------------------------------
    def layer_cost(self, name: str, layer) -> LayerCost:
        """The weight gradient this step computed: on M ("mask") or every entry ("exact")."""
        numel, nnz = layer.weight.size, layer.mask_nnz
        paid = numel if layer.last_weight_grad == "exact" else nnz
        return LayerCost(name=name, n=layer.rows, numel=numel, nnz_m=nnz, nnz_d=paid,
                         nnz_exact=paid)

    def state_dict(self, trainer) -> Dict[str, np.ndarray]:
        out = {}
        for name, layer in trainer.layers:
            out[f"keep.{name}"] = layer.state.keep.copy()
            out[f"seed.{name}"] = np.array(layer.state.seed, dtype=np.int64)
        return out

    def load_state_dict(self, trainer, arrays) -> None:
        for name, layer in trainer.layers:
            for key in (f"keep.{name}", f"seed.{name}"):
                if key not in arrays:
                    raise KeyError(f"the {self.method.name} state has no entry {key!r}")
            keep = np.asarray(arrays[f"keep.{name}"])
            if keep.dtype != bool or keep.shape != layer.weight2d.shape:
                raise ValueError(f"{self.method.name} state keep.{name}: expected a bool array "
                                 f"of shape {layer.weight2d.shape}, got {keep.dtype} {keep.shape}")
            layer.state.keep = keep.copy()
            layer.state.seed = int(arrays[f"seed.{name}"])


class FastMaskHooks(TopologyHooks):
    """The fast implementation's forward mask: the stored ``keep``, no rule.

    A topology update gives ``keep`` a new array instead of changing it in
    place: the kernels keep the last forward's mask to reuse its sparse
    structure while the mask is unchanged, and an array changed in place
    would compare equal to itself.
    """

    def forward_mask(self, layer, w2):
        return ForwardMask(keep=layer.state.keep, absw=np.abs(w2),
                           tau=np.zeros(w2.shape[0], w2.dtype), reset=False)

    def mask_inputs(self, layer):
        return (layer.state.keep,)

    @staticmethod
    def changed_entries(keep, gone, new) -> np.ndarray:
        """bool like ``keep``: True at the flat indices ``gone`` and ``new`` (that left or entered M)."""
        changed = np.zeros(keep.shape, dtype=bool)
        flat = changed.reshape(-1)
        flat[gone] = True
        flat[new] = True
        return changed


class TextbookMaskHooks(TopologyHooks):
    """The textbook implementation's forward mask: the stored ``keep`` as 0/1."""

    def forward_mask(self, layer, W):
        return layer.state.keep.astype(W.dtype)

    @staticmethod
    def install(layer, W_new, M_new) -> np.ndarray:
        """Write a topology update's W and M into the layer (in place); returns the entries
        that left or entered M, bool (out, fan_in)."""
        st = layer.state
        changed = st.keep != M_new
        layer.weight2d[...] = W_new
        st.keep[...] = M_new
        return changed
