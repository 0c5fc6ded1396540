r"""``set``: Sparse Evolutionary Training (Mocanu et al. 2018, Nature Communications).

A fixed-size random mask per layer (density ``density``, spread over layers
by ERK or uniformly), trained on its own weights only: the weight gradient
is computed on M's entries (a sampled product). After every epoch but the
last, each layer drops the :math:`\lfloor \zeta \cdot \mathrm{nnz}(M) \rfloor`
active weights closest to 0 and grows as many at random inactive positions,
new weights drawn from the layer's initialiser
(:func:`dfbst_np.textbook.set_update`, :math:`\zeta` = ``zeta``, default 0.3).

The update after epoch e runs just before epoch e + 1's first step, so that
epoch e's test accuracy is that of the network as trained (Mocanu et al.'s
code evaluates, then evolves); the training is the same either way. Its
random draws come from ``default_rng([layer seed, e])``, so a run resumed
from a checkpoint draws what the uninterrupted run drew.
"""
from __future__ import annotations

import numpy as np

from .. import textbook as tb
from ..sparse import topology as tp
from .base import Method
from .fast import FastRule
from .textbook_rule import TextbookRule
from .topology import FastMaskHooks, TextbookMaskHooks, layer_init


class SETHooks:
    """The schedule, shared by both implementations; ``evolve`` is each one's own."""

    OPTIONS = {"density": 0.1, "distribution": "erk", "zeta": 0.3}

    def initial_keep(self, layer, density):
        M = tb.random_mask(layer.weight2d.shape, density, np.random.default_rng([layer.state.seed, 0]))
        return M != 0

    def step_weight_grad(self, trainer, info):
        # Mode: the layers' default ("mask"). Before the first step of epoch e > 1,
        # the topology update that follows epoch e - 1 (see the module docstring).
        if info.index == 0 and info.epoch > 1:
            for name, layer in trainer.layers:
                rng = np.random.default_rng([layer.state.seed, info.epoch - 1])
                changed = self.evolve(layer, rng)
                self.zero_momentum(trainer, name, layer, changed)
        return None


class FastSET(SETHooks, FastMaskHooks, FastRule):
    def evolve(self, layer, rng):
        """In place on W and M; returns the entries that left or entered M, bool (out, fan_in)."""
        st = layer.state
        st.keep = keep = st.keep.copy()     # a new array: see FastMaskHooks
        gone, new = tp.set_update_(layer.weight2d, keep, self.options["zeta"], rng, layer_init(layer))
        return self.changed_entries(keep, gone, new)


class TextbookSET(SETHooks, TextbookMaskHooks, TextbookRule):
    def evolve(self, layer, rng):
        W_new, M_new = tb.set_update(layer.weight2d, layer.state.keep, self.options["zeta"], rng,
                                     layer_init(layer))
        return self.install(layer, W_new, M_new)


METHOD = Method(
    "set", title="SET",
    paper="Mocanu, Mocanu, Stone, Nguyen, Gibescu and Liotta, \"Scalable training of artificial neural "
          "networks with adaptive sparse connectivity inspired by network science\", Nature "
          "Communications 9, 2383 (2018)",
    fast=FastSET(), textbook=TextbookSET(),
    doc="M: fixed-size random (ERK); dW on M only; after every epoch drop the smallest |W|, grow at random.")
