r"""``rigl``: Rigging the Lottery (Evci, Gale, Menick, Castro and Elsen, ICML 2020).

A fixed-size random mask per layer (``density``, ERK or uniform), trained on
its own weights: the weight gradient is computed on M's entries, except on
the update steps t = ``update_interval``, 2 ``update_interval``, ... before
``update_end`` (a fraction of the run's steps, default 0.75), where it is
computed dense. After such a step's optimiser update each layer drops the
k active weights of smallest magnitude and grows the k inactive positions of
largest dense-gradient magnitude (:func:`dfbst_np.textbook.rigl_update`),

.. math:: k = \lfloor f(t)\, \mathrm{nnz}(M) \rfloor, \qquad
    f(t) = \frac{\alpha}{2}\left(1 + \cos\frac{\pi t}{T_\mathrm{end}}\right)

(:func:`dfbst_np.textbook.cosine_fraction`, :math:`\alpha` =
``drop_fraction``, default 0.3). Grown weights start at 0, with momentum 0.
The update uses this step's dense gradient A = dL/dW_hat, which the
``grads`` hook keeps in ``layer.state`` before masking it to dW = A * M.
"""
from __future__ import annotations

import numpy as np

from .. import textbook as tb
from ..sparse import topology as tp
from .base import Method
from .fast import FastRule
from .textbook_rule import TextbookRule
from .topology import FastMaskHooks, TextbookMaskHooks, schedule_step


class RigLHooks:
    """The schedule, shared by both implementations; ``grow`` is each one's own."""

    OPTIONS = {"density": 0.1, "distribution": "erk", "drop_fraction": 0.3, "update_interval": 100,
               "update_end": 0.75}

    def new_state(self, layer):
        state = super().new_state(layer)
        state.dense_grad = None     # A of an update step, (out, fan_in)
        return state

    def initial_keep(self, layer, density):
        M = tb.random_mask(layer.weight2d.shape, density, np.random.default_rng([layer.state.seed, 0]))
        return M != 0

    def update_at(self, info):
        """(t, T_end) when the step being taken (t = info.step + 1) updates the topology, else None."""
        if info.total is None:
            raise ValueError("rigl needs the run's length to place its schedule: give the Trainer "
                             "steps_per_epoch and epochs")
        t = info.step + 1
        end = schedule_step(self.options["update_end"], info.total)
        return (t, end) if t % self.options["update_interval"] == 0 and t < end else None

    def step_weight_grad(self, trainer, info):
        """Dense on update steps (the growth criterion needs every entry of A), else M's entries."""
        return "exact" if self.update_at(info) is not None else None

    def after_update(self, trainer, info) -> None:
        when = self.update_at(info)
        if when is None:
            return
        t, end = when
        f = tb.cosine_fraction(t, self.options["drop_fraction"], end)
        for name, layer in trainer.layers:
            st = layer.state
            changed = self.grow(layer, st.dense_grad.reshape(st.keep.shape), f)
            st.dense_grad = None
            self.zero_momentum(trainer, name, layer, changed)


class FastRigL(RigLHooks, FastMaskHooks, FastRule):
    def grads(self, layer, A, fm):
        if A.full:
            layer.state.dense_grad = A.values
        return super().grads(layer, A, fm)

    def grow(self, layer, grad, f):
        """In place on W and M; returns the entries that left or entered M, bool (out, fan_in)."""
        st = layer.state
        st.keep = keep = st.keep.copy()     # a new array: see FastMaskHooks
        gone, new = tp.rigl_update_(layer.weight2d, keep, grad, f)
        return self.changed_entries(keep, gone, new)


class TextbookRigL(RigLHooks, TextbookMaskHooks, TextbookRule):
    def grads(self, layer, A, M):
        layer.state.dense_grad = A      # dense on an update step (the textbook's A * M otherwise)
        return super().grads(layer, A, M)

    def grow(self, layer, grad, f):
        W_new, M_new = tb.rigl_update(layer.weight2d, layer.state.keep, grad, f)
        return self.install(layer, W_new, M_new)


METHOD = Method(
    "rigl", title="RigL",
    paper="Evci, Gale, Menick, Castro and Elsen, \"Rigging the Lottery: Making All Tickets Winners\", "
          "ICML 2020",
    fast=FastRigL(), textbook=TextbookRigL(),
    doc="M: fixed-size random (ERK); dW on M, dense every update_interval steps; drop the smallest |W|, "
        "grow the largest |dL/dW_hat|.")
