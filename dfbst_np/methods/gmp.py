r"""``gmp``: gradual magnitude pruning (Zhu and Gupta 2017, "To prune, or not to prune").

Training starts dense. At ``prune_start`` (a fraction of the run's steps,
default 0.1), every ``update_interval`` steps after it (default 100) and at
``update_end`` (default 0.6), each layer is pruned to the magnitude mask of
its current weights at the density

.. math:: d_l(t) = d_{l,f} + (1 - d_{l,f}) \left(1 - \frac{t - t_0}{t_1 - t_0}\right)^3

(:func:`dfbst_np.textbook.gmp_density`), :math:`d_{l,f}` the layer's share
of ``density`` (ERK or uniform), so the final density is reached at
``update_end`` however short the run. The weight gradient is computed dense
every step (as the published method does: the pruned weights are masked in
W_hat = W * M, not removed from the product), and used on M: pruned weights
and their momentum stay exactly 0.
"""
from __future__ import annotations

import numpy as np

from .. import textbook as tb
from ..sparse import topology as tp
from .base import Method
from .fast import FastRule
from .textbook_rule import TextbookRule
from .topology import FastMaskHooks, TextbookMaskHooks, schedule_step


class GMPHooks:
    """The schedule, shared by both implementations; ``prune`` is each one's own."""

    OPTIONS = {"density": 0.1, "distribution": "erk", "prune_start": 0.1, "update_end": 0.6,
               "update_interval": 100}

    def initial_keep(self, layer, density):
        return np.ones(layer.weight2d.shape, dtype=bool)

    def default_weight_grad(self, settings) -> str:
        return "exact"

    def prune_step(self, info):
        """(t, start, end) when the step just taken (t = info.step + 1) prunes, else None."""
        if info.total is None:
            raise ValueError("gmp needs the run's length to place its schedule: give the Trainer "
                             "steps_per_epoch and epochs")
        t = info.step + 1
        end = max(1, schedule_step(self.options["update_end"], info.total))
        start = min(schedule_step(self.options["prune_start"], info.total), end)
        on = t == end or (start <= t < end and (t - start) % self.options["update_interval"] == 0)
        return (t, start, end) if on else None

    def after_update(self, trainer, info) -> None:
        when = self.prune_step(info)
        if when is None:
            return
        t, start, end = when
        for (name, layer), final in zip(trainer.layers, self.densities(trainer.layers)):
            gone = self.prune(layer, tb.gmp_density(t, final, start, end))
            self.zero_momentum(trainer, name, layer, gone)


class FastGMP(GMPHooks, FastMaskHooks, FastRule):
    def prune(self, layer, density):
        """In place on W and M; returns the pruned entries as bool (out, fan_in)."""
        st = layer.state
        st.keep = keep = st.keep.copy()     # a new array: see FastMaskHooks
        gone = np.zeros(keep.shape, dtype=bool)
        gone.reshape(-1)[tp.prune_to_density(layer.weight2d, keep, density)] = True
        return gone


class TextbookGMP(GMPHooks, TextbookMaskHooks, TextbookRule):
    def prune(self, layer, density):
        st, W = layer.state, layer.weight2d
        M_new = tb.magnitude_mask(W, density) != 0
        gone = st.keep & ~M_new
        W[...] = W * M_new
        st.keep[...] = M_new
        return gone


METHOD = Method(
    "gmp", title="GMP",
    paper="Zhu and Gupta, \"To prune, or not to prune: exploring the efficacy of pruning for model "
          "compression\", ICLR workshop 2018 (arXiv:1710.01878, 2017)",
    fast=FastGMP(), textbook=TextbookGMP(),
    doc="M: magnitude, density falls from 1 to the target on a cubic schedule; dense dW used on M.")
