r"""Topology updates of GMP, SET and RigL on a layer's own buffers (the fast path).

The textbook twins (:func:`dfbst_np.textbook.magnitude_mask`,
:func:`~dfbst_np.textbook.set_update`, :func:`~dfbst_np.textbook.rigl_update`)
sort every candidate and return new arrays. Here the k entries to drop or
grow are found by a partition (linear time) and W and M are changed in
place, so a layer keeps its arrays (and the optimiser its momentum buffers)
across an update; the functions return which entries changed, so that the
caller can zero the momentum of exactly those. The selected sets, the random
draws and the values are the textbook's: tested equal, masks identical.

Selection rule, shared by all three: among entries with equal scores, the
lower flat index (C order) is taken first.
"""
from __future__ import annotations

from typing import Callable, Tuple

import numpy as np

__all__ = ["smallest_k", "largest_k", "prune_to_density", "set_update_", "rigl_update_"]


def _flat(a: np.ndarray, name: str) -> np.ndarray:
    """A 1-D view of ``a`` (never a copy: the update must land in the caller's array)."""
    if not a.flags.c_contiguous:
        raise ValueError(f"topology update: {name} must be C-contiguous to be updated in "
                         f"place, got strides {a.strides} for shape {a.shape}")
    return a.reshape(-1)


def smallest_k(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k smallest of a 1-D ``values``, ties to the lower index, ascending.

    One partition finds the k-th smallest value v; every entry below v is
    taken, and the entries equal to v by increasing index until k are taken
    (what a stable sort's first k would be, as a set).
    """
    n = values.size
    if k <= 0:
        return np.empty(0, dtype=np.intp)
    if k >= n:
        return np.arange(n, dtype=np.intp)
    v = np.partition(values, k - 1)[k - 1]
    below = np.flatnonzero(values < v)
    equal = np.flatnonzero(values == v)[:k - below.size]
    return np.sort(np.concatenate([below, equal]))


def largest_k(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest of a 1-D ``values``, ties to the lower index, ascending."""
    return smallest_k(-values, k)


def prune_to_density(W: np.ndarray, M: np.ndarray, density: float) -> np.ndarray:
    r"""GMP's pruning step in place: M becomes the magnitude mask of W, and W is zeroed off it.

    .. math:: M \leftarrow \mathrm{magnitude\_mask}(W, d), \qquad W \leftarrow W \odot M

    Returns the flat indices that were active and are now pruned.
    """
    if W.shape != M.shape:
        raise ValueError(f"prune_to_density: W {W.shape} and M {M.shape} must have the same shape")
    k = round(density * W.size)
    Mf, Wf = _flat(M, "M"), _flat(W, "W")
    keep = largest_k(np.abs(Wf), k)
    was = Mf != 0
    Mf[:] = 0
    Mf[keep] = 1
    pruned = np.flatnonzero(was & (Mf == 0))
    Wf[Mf == 0] = 0
    return pruned


def _drop_(W: np.ndarray, M: np.ndarray, fraction: float) -> Tuple[np.ndarray, int]:
    """Switch off the k active entries of smallest |W| (M in place); returns their indices and k."""
    if W.shape != M.shape:
        raise ValueError(f"topology update: W {W.shape} and M {M.shape} must have the same shape")
    Mf, Wf = _flat(M, "M"), _flat(W, "W")
    active = np.flatnonzero(Mf)
    k = int(np.floor(fraction * active.size))
    drop = active[smallest_k(np.abs(Wf[active]), k)]
    Mf[drop] = 0
    return drop, k


def _grow_(W: np.ndarray, M: np.ndarray, drop: np.ndarray, grow: np.ndarray,
           new_values) -> Tuple[np.ndarray, np.ndarray]:
    """Switch on ``grow`` (M in place), zero the dropped weights that stay off, set the new ones."""
    Mf, Wf = _flat(M, "M"), _flat(W, "W")
    dropped_before = np.zeros(Mf.size, dtype=bool)
    dropped_before[drop] = True
    new = grow[~dropped_before[grow]]          # inactive before the update
    Mf[grow] = 1
    gone = drop[Mf[drop] == 0]                 # dropped and not grown back
    Wf[gone] = 0
    Wf[new] = new_values
    return gone, new


def set_update_(W: np.ndarray, M: np.ndarray, zeta: float, rng: np.random.Generator,
                init: Callable) -> Tuple[np.ndarray, np.ndarray]:
    r"""SET's update (:func:`dfbst_np.textbook.set_update`) in place on W and M.

    W must be 0 off M (as the methods keep it). Returns (gone, new): the flat
    indices switched off, and those switched on with new values; the caller
    zeroes their momentum.
    """
    drop, k = _drop_(W, M, zeta)
    inactive = np.flatnonzero(M.reshape(-1) == 0)
    grow = rng.choice(inactive, size=k, replace=False)
    dropped_before = np.zeros(M.size, dtype=bool)
    dropped_before[drop] = True
    n_new = int(np.count_nonzero(~dropped_before[grow]))
    return _grow_(W, M, drop, grow, init(rng, n_new))


def rigl_update_(W: np.ndarray, M: np.ndarray, grad: np.ndarray,
                 fraction: float) -> Tuple[np.ndarray, np.ndarray]:
    r"""RigL's update (:func:`dfbst_np.textbook.rigl_update`) in place on W and M.

    W must be 0 off M. Scores of the entries still active after the drop are
    set below every |grad| (-1), so one partition over the whole layer finds
    the grown ones. Returns (gone, new) as :func:`set_update_`.
    """
    if grad.shape != W.shape:
        raise ValueError(f"rigl_update_: grad {grad.shape} must have W's shape {W.shape}")
    drop, k = _drop_(W, M, fraction)
    score = np.abs(grad).reshape(-1)
    score[M.reshape(-1) != 0] = -1.0
    grow = largest_k(score, k)
    return _grow_(W, M, drop, grow, 0)
