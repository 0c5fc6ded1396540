r"""The step function H and the straight-through estimators of its derivative.

H has derivative zero almost everywhere, so a threshold inside H would never
learn. A straight-through estimator (STE) replaces dH/dx in the backward
pass by a surrogate h(x), while the forward pass keeps the exact step.

.. math::
    H(x) = \begin{cases} 1 & x > 0 \\ 0 & x \le 0 \end{cases}

DST's long-tailed estimator (the one the paper and the reference use):

.. math::
    h(x) = \begin{cases} 2 - 4|x| & |x| \le 0.4 \\ 0.4 & 0.4 < |x| \le 1 \\ 0 & |x| > 1 \end{cases}
"""
from __future__ import annotations

import numpy as np


def step(x: np.ndarray) -> np.ndarray:
    """H(x) = 1 where x > 0 else 0 (strict: H(0) = 0), in x's dtype.

    Textbook twin: :func:`dfbst_np.textbook.H`."""
    return (x > 0).astype(x.dtype)


def long_tailed(x: np.ndarray, out: np.ndarray = None) -> np.ndarray:
    """DST's estimator: a triangle of height 2 near 0 with a 0.4 tail out to |x| = 1.

    Textbook twin: :func:`dfbst_np.textbook.h`.

    Computed as clip(2 - 4|x|, 0.4, 2) on |x| <= 1, which is the same function
    (2 - 4|x| <= 2 always), in at most five passes over x, all in x's dtype:
    abs, a max that decides whether the clip and the zeroing of |x| > 1 can
    change anything at all (for the small weights, thresholds and normalised
    gradients of these networks they cannot, and both passes are skipped),
    and the affine map in two. 4|x| is exact, so (-4|x|) + 2 rounds exactly
    as the reference's 2 - 4|x|.

    Parameters
    ----------
    x : ndarray
    out : ndarray like x, optional
        Where to write h(x); may be ``x`` itself (then x is overwritten).
    """
    a = np.abs(x, out=out)
    amax = a.max(initial=0.0)
    beyond = not bool(amax <= 1.0)                   # NaN: take the exact path
    far = a > 1.0 if beyond else None
    np.multiply(a, -4.0, out=a)
    np.add(a, 2.0, out=a)
    # The clip to [0.4, 2] changes nothing when 2 - 4 max|x| >= 0.4 (2 - 4|x|
    # is monotone, also after rounding); for the small weights, thresholds
    # and normalised gradients here that is the usual case.
    if beyond or not bool(a.dtype.type(2.0) - a.dtype.type(4.0) * a.dtype.type(amax) >= 0.4):
        np.clip(a, 0.4, 2.0, out=a)
    if beyond:
        a[far] = 0.0
    return a


def identity(x: np.ndarray) -> np.ndarray:
    """The plain STE: h(x) = 1 everywhere (Bengio et al., 2013)."""
    return np.ones_like(x)


def clipped(x: np.ndarray) -> np.ndarray:
    """The clipped STE: h(x) = 1 for |x| <= 1, else 0 (as for binarised networks)."""
    return (np.abs(x) <= 1.0).astype(x.dtype)


def apply_estimator(estimator, z: np.ndarray, out: np.ndarray = None) -> np.ndarray:
    """h(z) for one of :data:`ESTIMATORS`; the long-tailed one writes into ``out``
    (which may be z itself), the others return a new array."""
    return long_tailed(z, out=out) if estimator is long_tailed else estimator(z)


ESTIMATORS = {"long_tailed": long_tailed, "identity": identity, "clipped": clipped}


def get_estimator(name: str):
    """Look up an estimator by name, with a clear error for an unknown one."""
    try:
        return ESTIMATORS[name]
    except KeyError:
        raise ValueError(f"unknown estimator {name!r}; expected one of {sorted(ESTIMATORS)}") from None
