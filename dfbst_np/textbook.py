r"""DFBST as the paper and SPEC write it: one short function per equation.

This module is the readable version of the method, and the oracle the fast
path (:mod:`dfbst_np.sparse`) is tested against. It is plain NumPy in SPEC's
symbols, with no caches, no in-place tricks and no performance branches, and
it imports no other part of dfbst_np but the method registry. Read it top to
bottom: the order of the functions is the order of one training step.

Symbols, for one masked layer (a conv weight is its (out, in*kh*kw) matrix):

* W (out, fan_in): weights; row i belongs to output unit i.
* t (out,): forward thresholds; u (out,): backward thresholds.
* M (out, fan_in): forward mask; D (out, fan_in): backward mask.
* X (N, fan_in): inputs of the product; dY (N, out): gradient of its output.
* A = dL/dW_hat (out, fan_in): the gradient of the masked weight.
* V: the std of every masked layer's masked gradient.

``method`` is ``"dst"`` (DST: tau = t) or ``"dfbst"`` (tau = ``|t|``);
``"dense"`` has no mask (or a :mod:`dfbst_np.methods` object, which they ask).
``float32_masks=True``: the authors' float32 masks (autograd rounds every
gradient reaching a mask to float32; SPEC, "Float32 masks in the reference").

>>> import numpy as np
>>> from dfbst_np import textbook as tb
>>> W = np.array([[0.5, -0.1], [0.2, 0.3]]); t = np.array([0.2, -0.25])
>>> M, t_new = tb.forward_mask(W, t, "dfbst")
>>> M
array([[1., 0.],
       [0., 1.]])
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

__all__ = ["H", "h", "effective_threshold", "sign_s", "forward_mask", "masked_forward",
           "masked_backward", "layer_grads", "threshold_penalty", "row_normalise", "std_and_grad",
           "backward_mask", "RESET_DENSITY"]

#: A layer whose forward mask keeps at most this fraction of W has t reset to 0.
RESET_DENSITY = 0.01


def H(x: np.ndarray) -> np.ndarray:
    r"""The step function, strict at 0, in x's dtype.

    .. math:: H(x) = 1 \text{ if } x > 0 \text{ else } 0
    """
    return (x > 0).astype(x.dtype)


def h(x: np.ndarray) -> np.ndarray:
    r"""DST's long-tailed straight-through estimator, used in place of H'(x).

    .. math::
        h(x) = \begin{cases} 2 - 4|x| & |x| \le 0.4 \\ 0.4 & 0.4 < |x| \le 1 \\
               0 & |x| > 1 \end{cases}
    """
    a = np.abs(x)
    return np.where(a <= 0.4, 2 - 4 * a, np.where(a <= 1, 0.4, 0.0)).astype(x.dtype)


def effective_threshold(t: np.ndarray, method: str) -> np.ndarray:
    r"""The threshold the mask compares ``|W|`` with, per row.

    .. math:: \tau_i = |t_i| \text{ (dfbst)}, \qquad \tau_i = t_i \text{ (dst)}
    """
    return np.abs(t) if _rule(method).abs_threshold else t


def sign_s(t: np.ndarray, method: str) -> np.ndarray:
    r"""d tau / dt: the sign of t with s(0) = 1 for dfbst; 1 for dst.

    .. math:: s(t_i) = 1 \text{ if } t_i \ge 0 \text{ else } -1
    """
    if _rule(method).abs_threshold:
        return np.where(t >= 0, 1.0, -1.0).astype(t.dtype)
    return np.ones_like(t)


def forward_mask(W: np.ndarray, t: np.ndarray, method: str) -> Tuple[np.ndarray, np.ndarray]:
    r"""The forward mask and the reset rule. Inputs are not modified.

    .. math::
        M_{ij} = H(|W_{ij}| - \tau_i); \quad
        \text{if } \operatorname{mean}(M) \le 0.01: \; t \leftarrow 0,\;
        M_{ij} = H(|W_{ij}| - \tau_i(0))

    Returns
    -------
    M : (out, fan_in), 0/1 in W's dtype (all ones for ``"dense"``).
    t_new : (out,), t after the reset rule (a copy; None for ``"dense"``).
    """
    if not _rule(method).masked:
        return np.ones_like(W), None
    M = H(np.abs(W) - effective_threshold(t, method)[:, None])
    if M.mean() <= RESET_DENSITY:
        t = np.zeros_like(t)
        M = H(np.abs(W) - effective_threshold(t, method)[:, None])
    return M, t.copy()


def masked_forward(X: np.ndarray, W: np.ndarray, M: np.ndarray, b=None) -> np.ndarray:
    r"""The masked layer's product, (N, fan_in) -> (N, out).

    .. math:: \hat W = W \odot M, \qquad Y = X \hat W^\top + b
    """
    Y = X @ (W * M).T
    return Y if b is None else Y + b


def masked_backward(dY: np.ndarray, X: np.ndarray, W: np.ndarray,
                    M: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    r"""The product's backward: the gradient of W_hat and of the input.

    .. math:: A = dY^\top X, \qquad dX = dY\, \hat W

    Returns A (out, fan_in) and dX (N, fan_in).
    """
    return dY.T @ X, dY @ (W * M)


def _mask_dtype(g: np.ndarray, float32_masks: bool) -> np.ndarray:
    """A gradient arriving at a mask, rounded to float32 when the mask is float32."""
    return g.astype(np.float32).astype(g.dtype) if float32_masks else g


def layer_grads(A: np.ndarray, W: np.ndarray, t: np.ndarray, M: np.ndarray, method: str,
                float32_masks: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    r"""The gradient rule: dL/dW and dL/dt from A through the STE (no alpha term).

    ``M = H(|W| - tau)`` sits in ``W_hat = W * M``, so the chain rule with h in
    place of H' gives, with ``z = |W| - tau`` and ``G = A * W`` the gradient
    reaching M:

    .. math::
        \frac{\partial L}{\partial W} = A \odot M + G \odot \operatorname{sign}(W) \odot h(z)
            = A \odot (M + |W| \odot h(z)), \qquad
        \frac{\partial L}{\partial t_i} = -s(t_i) \sum_j G_{ij}\, h(z_{ij})

    ``t`` is the threshold the forward used (after the reset rule), M its mask.
    For ``"dense"`` the gradient of W is A and there is no dt (None).
    """
    if not _rule(method).masked:
        return A.copy(), None
    z = np.abs(W) - effective_threshold(t, method)[:, None]
    G = _mask_dtype(A * W, float32_masks)
    dW = A * M + G * np.sign(W) * h(z)
    dt = -sign_s(t, method) * (G * h(z)).sum(axis=1)
    return dW, dt


def threshold_penalty(t: np.ndarray, alpha: float) -> Tuple[float, np.ndarray]:
    r"""The sparsity penalty on t and its gradient; it pushes every t_i up.

    .. math:: P = \alpha \sum_i e^{-t_i}, \qquad \frac{\partial P}{\partial t_i} = -\alpha e^{-t_i}
    """
    return float(alpha * np.exp(-t).sum()), -alpha * np.exp(-t)


def row_normalise(dW: np.ndarray) -> np.ndarray:
    r"""Each row of dW divided by its L1 norm; a row of zeros stays 0.

    .. math:: \hat G_{ij} = \frac{dW_{ij}}{\sum_k |dW_{ik}|}
    """
    r = np.abs(dW).sum(axis=1, keepdims=True)
    return np.divide(dW, r, out=np.zeros_like(dW), where=r != 0)


def std_and_grad(gs: Sequence[np.ndarray]) -> Tuple[float, List[np.ndarray]]:
    r"""V, the unbiased std of all entries of all g together, and dV/dg (0 when V = 0).

    .. math::
        V = \sqrt{\tfrac{1}{n-1} \textstyle\sum_k (g_k - \bar g)^2}, \qquad
        \frac{\partial V}{\partial g_k} = \frac{g_k - \bar g}{(n - 1) V}
    """
    flat = np.concatenate([g.ravel() for g in gs])
    n, mean = flat.size, flat.mean()
    V = float(np.sqrt(((flat - mean) ** 2).sum() / (n - 1))) if n > 1 else 0.0
    if V == 0:
        return V, [np.zeros_like(g) for g in gs]
    return V, [(g - mean) / ((n - 1) * V) for g in gs]


def backward_mask(dWs: Sequence[np.ndarray], us: Sequence[np.ndarray], scale: float = 1.0,
                  float32_masks: bool = False):
    r"""DFBST's backward mask on every masked layer, V, and V's gradient in u.

    .. math::
        D = H(|\hat G| - u_i), \qquad g = dW \odot D, \qquad V = \operatorname{std}(g), \qquad
        \frac{\partial V}{\partial u_i} = -\sum_j \frac{\partial V}{\partial g_{ij}}\, dW_{ij}\,
            h(|\hat G_{ij}| - u_i)

    Parameters
    ----------
    dWs : per layer dW (out, fan_in), the loss gradient. Not modified.
    us : per layer u (out,).
    scale : the gradient returned is that of scale * V (the trainer passes
        beta). Only float32 masks round it, since beta sits inside the
        gradient that reaches D; otherwise it is a plain factor.

    Returns
    -------
    Ds : per layer D, 0/1 in dW's dtype.
    dWs_masked : per layer dW * D, the gradient the optimiser uses.
    V : float.
    dV_du : per layer d(scale * V)/du (out,).
    """
    zs = [np.abs(row_normalise(dW)) - u[:, None] for dW, u in zip(dWs, us)]
    Ds = [H(z) for z in zs]
    gs = [dW * D for dW, D in zip(dWs, Ds)]
    V, dV_dgs = std_and_grad(gs)
    dV_du = [-(_mask_dtype(scale * dV_dg * dW, float32_masks) * h(z)).sum(axis=1)
             for dV_dg, dW, z in zip(dV_dgs, dWs, zs)]
    return Ds, gs, V, dV_du


# ---------------------------------------------------------------------------
# The comparison methods: GMP, SET and RigL (SPEC section 8)
#
# Every function below takes a weight W in PyTorch's layout (a conv weight
# keeps its 4-D shape) and counts its entries in C order ("flat index").
# Where two entries tie, the one with the lower flat index is taken first.
# They are listed in COMPARISON, not in __all__ (DFBST's rule, which
# notebook 8 shows on one page).
# ---------------------------------------------------------------------------

#: The comparison methods' functions, in the order of this section.
COMPARISON = ("erk_densities", "random_mask", "magnitude_mask", "gmp_density", "cosine_fraction",
              "set_update", "rigl_update")


def erk_densities(shapes: Sequence[Sequence[int]], density: float) -> List[float]:
    r"""Per-layer densities by Erdős–Rényi-kernel (ERK), overall ``density``.

    Layer l with shape s (e.g. (out, in) or (out, in, kh, kw)) and
    :math:`n_l = \prod s` weights keeps the fraction

    .. math::
        d_l = \varepsilon \, \frac{\sum s}{\prod s}, \qquad
        \sum_{l \notin F} d_l\, n_l + \sum_{l \in F} n_l = \text{density} \sum_l n_l

    where F is the set of layers set dense: a layer whose :math:`d_l` would
    exceed 1 is set to 1 (put in F) and :math:`\varepsilon` is solved again
    for the others, until none exceeds 1. Small layers (large
    :math:`\sum s / \prod s`) are kept denser than large ones.

    Returns the list of :math:`d_l` (floats in (0, 1]), in the order of ``shapes``.
    """
    sizes = [float(np.prod(s)) for s in shapes]
    raw = [float(np.sum(s)) / n for s, n in zip(shapes, sizes)]
    target = density * sum(sizes)
    dense: set = set()
    eps = 0.0
    while True:
        free = [l for l in range(len(sizes)) if l not in dense]
        if not free:
            break
        budget = target - sum(sizes[l] for l in dense)
        eps = budget / sum(raw[l] * sizes[l] for l in free)
        over = [l for l in free if eps * raw[l] > 1]
        if not over:
            break
        dense.update(over)
    return [1.0 if l in dense else eps * raw[l] for l in range(len(sizes))]


def random_mask(shape: Sequence[int], density: float, rng: np.random.Generator,
                dtype=np.float64) -> np.ndarray:
    r"""A mask keeping :math:`\operatorname{round}(\text{density} \cdot n)` entries chosen at random.

    The kept flat indices are ``rng.choice(n, k, replace=False)`` (every set
    of k entries equally likely).
    """
    n = int(np.prod(shape))
    k = round(density * n)
    M = np.zeros(n, dtype=dtype)
    M[rng.choice(n, size=k, replace=False)] = 1
    return M.reshape(shape)


def magnitude_mask(W: np.ndarray, density: float) -> np.ndarray:
    r"""The mask keeping the :math:`k = \operatorname{round}(\text{density} \cdot n)` entries of largest ``|W|``.

    .. math:: M_{ij} = 1 \iff |W_{ij}| \text{ is among the } k \text{ largest}

    Entries are taken by decreasing ``|W|``; among equal ``|W|`` the lower flat index
    is kept first. M has W's shape and dtype.
    """
    k = round(density * W.size)
    order = np.argsort(-np.abs(W).ravel(), kind="stable")
    M = np.zeros(W.size, dtype=W.dtype)
    M[order[:k]] = 1
    return M.reshape(W.shape)


def gmp_density(step: float, final: float, start: float, end: float,
                initial: float = 1.0) -> float:
    r"""Zhu and Gupta's gradual pruning schedule, as a density.

    .. math::
        d(t) = d_f + (d_i - d_f) \left(1 - \frac{t - t_0}{t_1 - t_0}\right)^3
        \quad (t_0 \le t < t_1), \qquad d(t) = d_i \ (t < t_0), \qquad
        d(t) = d_f \ (t \ge t_1)

    with :math:`d_i` = ``initial``, :math:`d_f` = ``final``, :math:`t_0` =
    ``start`` and :math:`t_1` = ``end``. It falls fast at first and slowly
    near the end, when fewer weights are left to choose among.
    """
    if step < start:
        return float(initial)
    if step >= end:
        return float(final)
    return float(final + (initial - final) * (1 - (step - start) / (end - start)) ** 3)


def cosine_fraction(step: float, alpha: float, end: float) -> float:
    r"""RigL's cosine-annealed update fraction.

    .. math::
        f(t) = \frac{\alpha}{2} \left(1 + \cos\frac{\pi t}{T_\mathrm{end}}\right)
        \quad (t < T_\mathrm{end}), \qquad f(t) = 0 \ (t \ge T_\mathrm{end})
    """
    if step >= end:
        return 0.0
    return float(alpha / 2 * (1 + np.cos(np.pi * step / end)))


def _drop_smallest(W: np.ndarray, M: np.ndarray, fraction: float) -> Tuple[np.ndarray, int]:
    r"""M with its :math:`k = \lfloor f \cdot \operatorname{nnz}(M) \rfloor` active entries of smallest ``|W|`` removed.

    Returns the mask after the drop and k.
    """
    active = np.flatnonzero(M)
    k = int(np.floor(fraction * active.size))
    order = np.argsort(np.abs(W.ravel()[active]), kind="stable")
    M_mid = M.copy().ravel()
    M_mid[active[order[:k]]] = 0
    return M_mid, k


def _apply_growth(W: np.ndarray, M: np.ndarray, M_mid: np.ndarray, grow: np.ndarray,
                  new_values: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    r"""Switch on ``grow`` after the drop and set the weights.

    .. math:: W' = W \odot M', \text{ except } W'_g = \text{new value for } g
        \text{ grown and inactive before the update}

    A grown entry that was active before the update (dropped and grown back
    in the same update) keeps its weight, as RigL's code does.
    """
    M_new = M_mid.copy()
    M_new[grow] = 1
    W_new = np.where(M_new != 0, W.ravel(), 0).astype(W.dtype)
    new = grow[M.ravel()[grow] == 0]
    W_new[new] = new_values
    return W_new.reshape(W.shape), M_new.reshape(M.shape)


def set_update(W: np.ndarray, M: np.ndarray, zeta: float, rng: np.random.Generator,
               init) -> Tuple[np.ndarray, np.ndarray]:
    r"""One SET topology update (Mocanu et al. 2018). Inputs are not modified.

    1. drop: the :math:`k = \lfloor \zeta \cdot \operatorname{nnz}(M) \rfloor`
       active weights closest to 0 (smallest ``|W|``);
    2. grow: k positions drawn at random, ``rng.choice(inactive, k,
       replace=False)``, among those inactive after the drop (``inactive`` in
       increasing flat index);
    3. the grown positions that were inactive before the update take the
       values ``init(rng, number of them)``, in the order drawn; every
       position off the new mask is exactly 0.

    .. math:: \operatorname{nnz}(M') = \operatorname{nnz}(M)

    Returns (W_new, M_new) in W's and M's shapes and dtypes.
    """
    M_mid, k = _drop_smallest(W, M, zeta)
    inactive = np.flatnonzero(M_mid == 0)
    grow = rng.choice(inactive, size=k, replace=False)
    n_new = int(np.count_nonzero(M.ravel()[grow] == 0))
    return _apply_growth(W, M, M_mid, grow, init(rng, n_new))


def rigl_update(W: np.ndarray, M: np.ndarray, grad: np.ndarray,
                fraction: float) -> Tuple[np.ndarray, np.ndarray]:
    r"""One RigL topology update (Evci et al. 2020). Inputs are not modified.

    1. drop: the :math:`k = \lfloor f \cdot \operatorname{nnz}(M) \rfloor`
       active weights of smallest ``|W|``;
    2. grow: the k positions of largest ``|grad|`` among those inactive after
       the drop (grad is the dense gradient of the loss in W_hat, this step's);
    3. grown positions that were inactive before the update start at 0; a
       position dropped and grown back keeps its weight.

    Ties, in both: the lower flat index first.

    .. math::
        \mathrm{drop} = \operatorname{argmin}_k\{|W_j| : M_j = 1\}, \quad
        \mathrm{grow} = \operatorname{argmax}_k\{|\mathrm{grad}_j| : M_j = 0
        \text{ or } j \in \mathrm{drop}\}

    Returns (W_new, M_new) in W's and M's shapes and dtypes.
    """
    M_mid, k = _drop_smallest(W, M, fraction)
    inactive = np.flatnonzero(M_mid == 0)
    order = np.argsort(-np.abs(grad.ravel()[inactive]), kind="stable")
    grow = inactive[order[:k]]
    n_new = int(np.count_nonzero(M.ravel()[grow] == 0))
    return _apply_growth(W, M, M_mid, grow, np.zeros(n_new, dtype=W.dtype))


# -- what a method name means --------------------------------------------------

def _rule(method):
    """The method object of ``method`` (a registered name or a Method): it says
    whether there is a mask and which tau it uses."""
    from .methods import get        # imported here: dfbst_np.methods imports this module
    m = get(method)
    if m.masked and not m.threshold_mask:
        raise ValueError(f"method {m.name!r} has no threshold mask M = H(|W| - tau)")
    return m
