"""Check a module's hand-written backward against central differences.

Works on a single layer or a whole model: anything with ``forward``,
``backward``, ``params`` and ``grads`` (a :class:`~dfbst_np.nn.module.Module`).
Float64 only, because in float32 the differences drown in rounding.

Modes are the user's business: the check runs ``forward`` in the module's
current mode. In training mode Dropout draws a new mask on every forward
(call ``eval()`` or fix the mask first) and BatchNorm uses batch statistics,
which is differentiable and fine to check. Buffers such as BatchNorm's
running statistics are restored afterwards. A layer whose backward is a
straight-through estimator (the masked layers' thresholds) does not compute
the derivative of its forward, so it is not expected to pass.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np



@dataclass
class GradcheckRow:
    """One compared array: ``'input'`` or a parameter's dotted name."""
    name: str
    shape: Tuple[int, ...]
    checked: int     # entries compared (a random subset of large arrays)
    error: float     # max|analytic - numeric| / max(max|numeric|, tiny)
    has_grad: bool   # False when backward gave no gradient (compared as zero)


class GradcheckReport:
    """Result of :func:`gradcheck`: the maximum relative error per array."""

    def __init__(self, who: str, eps: float, rows: List[GradcheckRow]) -> None:
        self.who, self.eps, self.rows = who, eps, rows

    @property
    def errors(self) -> Dict[str, float]:
        return {r.name: r.error for r in self.rows}

    @property
    def max_error(self) -> float:
        return max((r.error for r in self.rows), default=0.0)

    def ok(self, tol: float = 1e-6) -> bool:
        """True when every compared array's relative error is <= tol."""
        return self.max_error <= tol

    def __getitem__(self, name: str) -> float:
        return self.errors[name]

    def __str__(self) -> str:
        width = max([len("array")] + [len(r.name) for r in self.rows])
        lines = [f"gradcheck of {self.who} (central differences, eps={self.eps:g})",
                 f"{'array':<{width}}  {'shape':<18} {'checked':>9}  max rel. error"]
        for r in self.rows:
            checked = f"{r.checked}/{int(np.prod(r.shape))}"
            note = "" if r.has_grad else "  (no gradient from backward)"
            lines.append(f"{r.name:<{width}}  {str(r.shape):<18} {checked:>9}  {r.error:.3e}{note}")
        lines.append(f"max error {self.max_error:.3e}")
        return "\n".join(lines)

    __repr__ = __str__


def relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    r"""Relative error of one array, scaled by the reference (numeric) values.

    .. math:: e = \frac{\max |a - b|}{\max |b|}

    A numeric gradient that is exactly zero everywhere (a parameter behind a
    step function, whose STE gradient is a surrogate) gives 0 if the analytic
    one is zero too, else inf: there is no scale to be relative to.
    """
    if analytic.size == 0:
        return 0.0
    diff, scale = float(np.abs(analytic - numeric).max()), float(np.abs(numeric).max())
    if scale == 0.0:
        return 0.0 if diff == 0.0 else float("inf")
    return diff / scale


def gradcheck(module, x: np.ndarray, loss_fn: Optional[Callable] = None, eps: float = 1e-6,
              params: Optional[Sequence[str]] = None, max_entries: int = 50, seed: int = 0,
              check_input: bool = True) -> GradcheckReport:
    r"""Compare ``module.backward`` with central differences of a scalar objective.

    For every compared entry :math:`\theta_k` of a parameter or of the input,

    .. math::
        \frac{\partial f}{\partial \theta_k} \approx
        \frac{f(\theta + \epsilon e_k) - f(\theta - \epsilon e_k)}{2 \epsilon},
        \qquad f = \sum_i y_i R_i \ \text{by default},

    with y = forward(x) and R a fixed standard-normal array drawn from
    ``seed``. The denominator is the step actually taken,
    :math:`(\theta_k + \epsilon) - (\theta_k - \epsilon)` in floating point.

    Parameters
    ----------
    module : Module
        A float64 layer or model; checked in its current train/eval mode.
    x : ndarray
        Float64 input.
    loss_fn : callable, optional
        ``loss_fn(y) -> (value, dvalue_dy)``, a scalar and its gradient with
        respect to y; replaces the default objective.
    eps : float
        Half the difference step.
    params : sequence of str, optional
        Dotted names of the parameters to check (default: all).
    max_entries : int
        Per array, at most this many entries (a seeded random subset) are compared.
    seed : int
        Seeds R and the subsets.
    check_input : bool
        Also compare the gradient with respect to x (row ``'input'``).

    Returns
    -------
    GradcheckReport
        The module's parameters are bitwise as before; ``module.grads``
        holds the analytic gradients of the objective.
    """
    who = module.describe() if hasattr(module, "describe") else type(module).__name__
    all_params = module.params
    for name, p in all_params.items():
        if p.dtype != np.float64:
            raise TypeError(f"gradcheck of {who}: parameter '{name}' is {p.dtype.name}; "
                            f"gradcheck works in float64 only")
    if not isinstance(x, np.ndarray) or x.dtype != np.float64:
        got = x.dtype.name if isinstance(x, np.ndarray) else type(x).__name__
        raise TypeError(f"gradcheck of {who}: the input must be a float64 ndarray, got {got}")
    names = list(all_params) if params is None else list(params)
    unknown = [n for n in names if n not in all_params]
    if unknown:
        raise KeyError(f"gradcheck of {who}: no parameters named {unknown}; "
                       f"it has {list(all_params)}")
    if not (eps > 0 and max_entries > 0):
        raise ValueError(f"gradcheck: eps and max_entries must be > 0, got {eps}, {max_entries}")

    rng = np.random.default_rng(seed)
    x = x.copy()  # entries of x are perturbed; the caller's array is not
    buffers = {k: v.copy() for k, v in getattr(module, "buffers", {}).items()}
    y0 = module.forward(x)
    if not isinstance(y0, np.ndarray) or y0.dtype != np.float64:
        raise TypeError(f"gradcheck of {who}: forward must return a float64 ndarray")
    r = rng.standard_normal(y0.shape)

    def objective(y):
        if loss_fn is None:
            return float(np.sum(y * r)), r
        value, dy = loss_fn(y)
        return float(value), dy

    def f() -> float:
        return objective(module.forward(x))[0]

    targets = ([("input", x)] if check_input else []) + [(n, all_params[n]) for n in names]
    numeric: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
    try:
        for name, a in targets:
            idx = _subset(a.size, max_entries, rng)
            numeric[name] = (idx, _central_differences(a, idx, eps, f))
        # The analytic pass comes last so the module is left with a consumed
        # cache and the gradients at the unperturbed point.
        if hasattr(module, "zero_grad"):
            module.zero_grad()
        _, dy = objective(module.forward(x))
        dx = module.backward(dy)
    finally:
        for key, value in buffers.items():
            np.copyto(module.buffers[key], value)

    grads = module.grads
    rows = []
    for name, a in targets:
        idx, num = numeric[name]
        g = dx if name == "input" else grads.get(name)
        has_grad = g is not None
        ana = np.zeros(idx.size) if g is None else np.asarray(g).reshape(-1)[idx]
        rows.append(GradcheckRow(name, a.shape, idx.size, relative_error(ana, num), has_grad))
    return GradcheckReport(who, eps, rows)


def _subset(size: int, max_entries: int, rng: np.random.Generator) -> np.ndarray:
    if size <= max_entries:
        return np.arange(size)
    return np.sort(rng.choice(size, size=max_entries, replace=False))


def _central_differences(a: np.ndarray, idx: np.ndarray, eps: float, f) -> np.ndarray:
    """Perturb ``a`` in place entry by entry; every entry is put back bitwise."""
    out = np.empty(idx.size)
    for j, k in enumerate(idx):
        at = np.unravel_index(k, a.shape)
        old = a[at]
        plus, minus = old + eps, old - eps
        try:
            a[at] = plus
            f_plus = f()
            a[at] = minus
            f_minus = f()
        finally:
            a[at] = old
        out[j] = (f_plus - f_minus) / (plus - minus)
    return out
