r"""``verify(..., stress=True)``: move a torch model into every branch of SPEC's rule.

A natural start (t = 0, u = 0, small gradients) leaves whole rules untested;
:func:`apply_stress` sets t, u and some weights so that every branch fires
(module docstring of :mod:`.verifier`, and the function's own).
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Sequence

import torch

from .. import methods

#: stress=True multiplies the inputs by this, so that the gradient norm exceeds the clip norm.
STRESS_INPUT_SCALE = 8.0


def masked_layer_names(names: Sequence[str]) -> List[str]:
    """dfbst_np names of the masked layers (those with a ``threshold``), in order."""
    return [n[:-len(".threshold")] for n in names if n.endswith(".threshold")]


#: stress=True's layer between the reset density and 5 %: the fraction of W it keeps.
STRESS_LOW_DENSITY = 0.03
#: Estimator inputs x stress places in h's plateau (0.4 < |x| <= 1) and tail (|x| > 1).
STRESS_PLATEAU, STRESS_TAIL = 0.7, 1.5


def _rows_of(n_rows: int, *wanted: int) -> List[int]:
    """Distinct rows for the stress's special rows (fewer when the layer is small)."""
    return sorted({r for r in wanted if r < n_rows})


def apply_stress(params: Mapping[str, torch.Tensor], method: str) -> Dict[str, str]:
    r"""Move the model into every branch of SPEC (module docstring); returns what was done.

    ``params`` are the torch parameters by dfbst_np name; they are changed in
    place. Per masked layer, with x the estimator's input:

    * t: x = |W| - |t| in all three regions of h: a few entries of row 0
      are set to |W| = |t_0| + 0.7 (h's plateau) and of row 2 to
      |t_2| + 1.5 (its tail), positive so the mask keeps them and ReLU
      passes them; every other entry sits near t (|x| <= 0.4); t of both
      signs (alternating by row);
    * u: x = |Ghat| - u: u_i = 0.5 / fan_in (D drops a row's smaller half,
      |x| <= 0.4), except row 1 at 0.7, row 3 at 1.5 and row 4 at
      -0.5 / fan_in (u < 0: D keeps the whole row);
    * the largest masked layer keeps 3 % of its weights (between the reset
      density 1 % and 5 %), another has every |t_i| above the row's |W|
      (the reset fires), the rest keep 70 % (t at the row's 30th percentile).
    """
    layers = masked_layer_names(list(params))
    if not layers:
        return {}
    size = {n: params[f"{n}.weight"].numel() for n in layers}
    low = max(layers, key=lambda n: size[n]) if len(layers) > 1 else None
    reset = next((n for n in layers[1:] + layers[:1] if n != low), layers[0])
    done = {}
    abs_t = methods.get(method).abs_threshold      # DFBST's tau = |t|, DST's tau = t
    with torch.no_grad():
        for layer in layers:
            W = params[f"{layer}.weight"]
            rows = W.detach().abs().reshape(W.shape[0], -1)
            n_out, fan_in = rows.shape
            sign = torch.ones(n_out, dtype=W.dtype)
            sign[1::2] = -1
            t = params[f"{layer}.threshold"]
            if layer == low:
                if not abs_t:
                    # dst masks with t itself: a negative t keeps its whole row
                    sign = torch.ones(n_out, dtype=W.dtype)
                    sign[-1] = -1
                level = torch.full((n_out,), float(torch.quantile(rows.flatten()[:2 ** 24],
                                                                  1 - STRESS_LOW_DENSITY)),
                                   dtype=W.dtype)
                done[layer] = f"{STRESS_LOW_DENSITY:.0%} density"
            elif layer == reset:
                level = torch.zeros(n_out, dtype=W.dtype)
                done[layer] = "reset"
            else:
                level = rows.kthvalue(max(1, int(0.3 * fan_in)), dim=1).values
                done[layer] = "t of both signs"
            # a few entries in h's plateau and tail (x = |W| - |t| > 0: kept by M)
            flat = W.view(n_out, -1)
            n_big = max(2, fan_in // 25)
            cols = torch.linspace(0, fan_in - 1, n_big).round().long().unique()
            for row, x in zip(_rows_of(n_out, 0, 2), (STRESS_PLATEAU, STRESS_TAIL)):
                flat[row, cols] = level[row] + x
            if layer == reset:
                rows = W.detach().abs().reshape(n_out, -1)
                level = rows.max(dim=1).values + 0.05
                # dfbst masks with |t|: a negative t above every |W| keeps nothing
                t.copy_(-level if abs_t else level)
            else:
                t.copy_(level * sign)
            u = params.get(f"{layer}.dthreshold")
            if u is not None:
                u.fill_(0.5 / fan_in)
                for row, x in zip(_rows_of(n_out, 1, 3, 4), (STRESS_PLATEAU, STRESS_TAIL,
                                                              -0.5 / fan_in)):
                    u[row] = x
    return done
