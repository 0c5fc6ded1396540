r"""The forward mask and the gradient rule of a masked layer (SPEC section 1).

One rule for linear and convolutional layers: a conv weight is the
(out, in*kh*kw) matrix to it. Row i of W belongs to output unit i, which has
threshold t_i.

Forward

.. math::
    M_{ij} = H(|W_{ij}| - \tau_i), \quad \tau_i = |t_i| \text{ (dfbst) or } t_i \text{ (dst)},
    \qquad \hat W = W \odot M

Backward, with A = dL/dW_hat and the STE h in place of H':

.. math::
    \frac{\partial L}{\partial W} = A \odot (M + |W| \odot h(|W| - \tau)), \qquad
    \frac{\partial L}{\partial t_i} = -s(t_i) \sum_j A_{ij} W_{ij}\, h(|W_{ij}| - \tau_i)

with s(t) = sign of t (1 at t = 0) for dfbst and s = 1 for dst. The
penalty :math:`\alpha \sum_i e^{-t_i}` is a separate term (``threshold_penalty``, the
textbook's own: one expression, nothing to make fast). ``method`` is a
registered name or a :class:`~dfbst_np.methods.Method`; what is asked of it
is its ``abs_threshold``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ..textbook import RESET_DENSITY, threshold_penalty    # one definition each, the textbook's
from .entries import Entries
from .fused import round32, scratch, sub_rows
from .step import apply_estimator, long_tailed

__all__ = ["ForwardMask", "effective_threshold", "forward_mask", "layer_grads", "threshold_penalty",
           "RESET_DENSITY"]


class ForwardMask:
    """What the forward mask keeps for the gradient rule.

    keep (out, fan_in) bool: M as a boolean array (what the kernels use).
    M (out, fan_in): the mask, 0/1 in W's dtype (made from ``keep`` when first read).
    absw (out, fan_in): |W|, reused by the gradient rule.
    tau (out,): the effective thresholds, in W's dtype.
    z (out, fan_in): |W| - tau, the argument of H, where h is evaluated. The
        forward makes it anyway (``|W| - tau > 0`` is the cheapest way to M);
        the exact gradient rule takes it over and writes h(z) into it, after
        which it is made again if read.
    nnz: number of kept weights.   reset: whether the reset rule zeroed t in this forward.
    """

    __slots__ = ("keep", "absw", "tau", "nnz", "reset", "_M", "_z", "dtype")

    def __init__(self, keep: np.ndarray, absw: np.ndarray, tau: np.ndarray, reset: bool,
                 nnz: Optional[int] = None, z: Optional[np.ndarray] = None) -> None:
        self.keep, self.absw, self.tau, self.reset = keep, absw, tau, bool(reset)
        self.nnz = int(np.count_nonzero(keep)) if nnz is None else int(nnz)
        self.dtype = absw.dtype
        self._M, self._z = None, z

    @property
    def M(self) -> np.ndarray:
        if self._M is None:
            self._M = self.keep.astype(self.dtype)
        return self._M

    @property
    def z(self) -> np.ndarray:
        if self._z is None:
            self._z = sub_rows(self.absw, self.tau)     # exact: one rounding, as |W| - tau
        return self._z

    def _take_z(self) -> np.ndarray:
        """z, handed over to be overwritten (the next read of :attr:`z` makes it again)."""
        z, self._z = self.z, None
        return z


def _abs_threshold(method) -> bool:
    """Whether ``method`` (a registered name or a Method) uses tau = |t| and s = sign(t)."""
    from ..methods import get           # imported here: dfbst_np.methods imports this package
    return get(method).abs_threshold


def effective_threshold(t: np.ndarray, method, dtype=None) -> np.ndarray:
    """tau (out,): |t| for dfbst, t for dst (the method's ``abs_threshold``), contiguous,
    in ``dtype`` (W's; default t's).

    Textbook twin: :func:`dfbst_np.textbook.effective_threshold`."""
    return np.ascontiguousarray(np.abs(t) if _abs_threshold(method) else t, dtype=dtype)


def _reset_fires(nnz: int, size: int, dtype) -> bool:
    """mean(M) <= 0.01 with M in ``dtype``, as the reference computes it.

    The sum of the 0/1 entries is exact (an integer below 2**24 even in
    float32), so the mean is that integer divided by the size, rounded once
    in ``dtype``, and compared with 0.01 in ``dtype`` (a Python float is a
    weak scalar: torch and NumPy both compare in the array's dtype).
    """
    dtype = np.dtype(dtype)
    mean = dtype.type(nnz) / dtype.type(size)
    return bool(mean <= dtype.type(RESET_DENSITY))


def forward_mask(w2: np.ndarray, t: np.ndarray, method) -> ForwardMask:
    r"""M = H(|W| - tau), with the reset rule.

    Textbook twin: :func:`dfbst_np.textbook.forward_mask` (which returns a new
    t instead of resetting it in place).

    .. math::
        \text{if } \operatorname{mean}(M) \le 0.01: \; t \leftarrow 0, \; M = H(|W| - \tau(0))

    ``t`` is modified in place when the reset fires: the reference does this
    in every forward, evaluation included, so a layer can never mask itself
    out entirely.

    Four passes over W: |W|, z = |W| - tau (a copy and an exact rank-1
    update, :func:`~dfbst_np.sparse.fused.sub_rows`), M = z > 0 and its
    count; comparing z with the scalar 0 is four times faster than comparing
    |W| with a per-row tau, so z costs nothing extra and the gradient rule
    reuses it. ``z > 0`` is ``|W| > tau`` exactly: with gradual underflow a
    difference of two floats rounds to 0 only when they are equal, and never
    changes sign.

    Parameters
    ----------
    w2 : (out, fan_in) weight matrix W.
    t : (out,) forward thresholds (the layer's parameter; may be reset in place).
    method : "dst" or "dfbst" (a name or the Method).
    """
    absw = np.abs(w2)
    tau = effective_threshold(t, method, w2.dtype)
    z = sub_rows(absw, tau)
    keep = np.greater(z, 0)
    nnz = int(np.count_nonzero(keep))
    reset = _reset_fires(nnz, keep.size, w2.dtype) if keep.size else False
    if reset:
        t[...] = 0
        tau = effective_threshold(t, method, w2.dtype)
        sub_rows(absw, tau, out=z)
        np.greater(z, 0, out=keep)
        nnz = int(np.count_nonzero(keep))
    return ForwardMask(keep=keep, absw=absw, tau=tau, reset=reset, nnz=nnz, z=z)


def _sign_s(t: np.ndarray, method, dtype):
    """s(t): sign of t with s(0) = 1 for dfbst; 1 for dst (twin: :func:`dfbst_np.textbook.sign_s`)."""
    return np.where(t >= 0, 1, -1).astype(dtype) if _abs_threshold(method) else 1


def _mask_terms(A: Entries, w2: np.ndarray, fm: ForwardMask):
    """W, |W|, z = |W| - tau and M on A's entries; z is ours to overwrite with h(z)."""
    if A.full:
        return w2, fm.absw, fm._take_z(), fm.keep
    w = A.take(w2)
    absw = np.abs(w)
    z = A.sub_rows(absw.copy(), fm.tau)          # |W| - tau on the support: one rounding, as z
    return w, absw, z, np.greater(z, 0)


def layer_grads(A: Entries, w2: np.ndarray, t: np.ndarray, fm: ForwardMask, method,
                estimator=long_tailed, float32_masks: bool = False,
                overwrite_a: bool = False) -> Tuple[Entries, np.ndarray]:
    r"""The gradient rule: dL/dW and dL/dt from A = dL/dW_hat, on A's entries.

    Textbook twin: :func:`dfbst_np.textbook.layer_grads`.

    .. math::
        G = A \odot W, \qquad
        \frac{\partial L}{\partial W} = A \odot M + G \odot h(z) \odot \operatorname{sign}(W), \qquad
        \frac{\partial L}{\partial t_i} = -s(t_i) \sum_j G_{ij}\, h(z_{ij})

    (G * sign(W) = A * |W|, the form SPEC writes.) G is the gradient that
    reaches the mask M; the reference keeps M in float32, so with
    ``float32_masks`` G is rounded to float32 exactly where autograd rounds it.

    ``A`` is an :class:`~dfbst_np.sparse.entries.Entries`: the whole matrix
    (the exact rule) or its entries on a support S (the predicted weight
    gradient: dW = 0 off S and dt sums over S only, an approximation of the
    exact rule unless S holds every entry; see :mod:`dfbst_np.sparse.masked`).
    The same code serves both; only the per-row operations differ.

    Computed in autograd's order, so every entry of dW rounds as the
    reference's: (A * |W|) * h = |(A * W) * h| * sign(W) (rounding is
    symmetric, so the two agree bit for bit). Passes over the entries (the
    exact mode's z comes from the forward and h(z) is written over it):
    h (4), A |W| (1), times h (1), A h (1, in h's buffer) and its row dots
    with W for dt (one read of both,
    :meth:`~dfbst_np.sparse.entries.Entries.row_dots`), A M (1, in h's
    buffer again) and the sum (1). With ``float32_masks`` G = A * W is
    rounded where autograd rounds it, so dt is summed from G h (one pass more).

    Parameters
    ----------
    A : Entries of the (out, fan_in) gradient of the loss with respect to W_hat.
    w2 : (out, fan_in) W.   t : (out,) thresholds.   fm : this step's ForwardMask
        (its z is used up: see :class:`ForwardMask`).
    method : "dst" or "dfbst" (s = sign(t) with s(0) = 1 for dfbst; s = 1 for dst).
    overwrite_a : bool
        dW may be written into A's values (A is then lost).

    Returns
    -------
    dW : Entries on A's support.   dt : (out,), without the alpha penalty.
    """
    a = A.values
    w, absw, z, keep = _mask_terms(A, w2, fm)
    h = apply_estimator(estimator, z, out=z)
    P = scratch(a.shape, a.dtype, "layer_grads") if overwrite_a else np.empty_like(a)
    np.multiply(a, absw, out=P)              # A |W| = (A W) sign(W)
    if float32_masks:                        # G = A W reaches the float32 mask rounded
        round32(P)
        G = round32(np.multiply(a, w))
        G *= h
        dt = A.row_sums(G)
    P *= h
    if not float32_masks:
        h *= a                               # A h, in h's buffer
        dt = A.row_dots(h, w)                # sum_j A_ij W_ij h_ij
    dt *= -_sign_s(t, method, a.dtype)
    AM = np.multiply(a, keep, out=h)         # A M (h is no longer needed)
    if overwrite_a:
        return A.like(np.add(AM, P, out=a)), dt
    return A.like(np.add(P, AM, out=P)), dt
