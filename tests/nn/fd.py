"""Central finite differences, and a harness that checks a layer's backward with them.

The scalar probed is ``L = sum(forward(x) * R)`` for a fixed random R, so the
analytic gradients are ``backward(R)`` and the layer's ``grads``.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import numpy as np

from dfbst_np.nn import Module
from tests.helpers import rel_err

H = 1e-6          # float64: truncation ~H^2, rounding ~1e-16/H, both far below 1e-7
TOL = 1e-7


def numerical_grad(f: Callable[[], float], a: np.ndarray, h: float = H) -> np.ndarray:
    """dF/da by central differences, perturbing ``a`` in place (restored after)."""
    grad = np.zeros_like(a, dtype=np.float64)
    flat, gflat = a.reshape(-1), grad.reshape(-1)
    assert np.shares_memory(flat, a), "a must be contiguous to perturb it in place"
    for k in range(flat.size):
        old = flat[k]
        flat[k] = old + h
        up = f()
        flat[k] = old - h
        down = f()
        flat[k] = old
        gflat[k] = (up - down) / (2 * h)
    return grad


def layer_grads(layer: Module, x: np.ndarray, rng: np.random.Generator,
                reset: Optional[Callable[[], None]] = None,
                h: float = H) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """``{"x": (analytic, numeric), param name: (analytic, numeric), ...}``.

    ``reset`` runs before every forward (e.g. to reseed a Dropout) so that the
    function being differentiated is deterministic.
    """
    reset = reset or (lambda: None)
    x = np.array(x, dtype=np.float64)           # own, contiguous copy to perturb
    reset()
    y = layer.forward(x)
    r = rng.standard_normal(np.shape(y))
    layer.zero_grad()
    dx = layer.backward(r)
    analytic = {"x": dx, **{k: v.copy() for k, v in layer.grads.items()}}
    assert set(analytic) == {"x", *layer.params}, "every parameter should receive a gradient"

    def loss() -> float:
        reset()
        return float(np.sum(layer.forward(x) * r))

    out = {"x": (analytic["x"], numerical_grad(loss, x, h))}
    for name, p in layer.params.items():
        out[name] = (analytic[name], numerical_grad(loss, p, h))
    layer._cache = None
    return out


def assert_fd(layer: Module, x: np.ndarray, rng: np.random.Generator, tol: float = TOL,
              **kwargs) -> None:
    """Backward equals central differences for the input and every parameter."""
    for name, (analytic, numeric) in layer_grads(layer, x, rng, **kwargs).items():
        err = rel_err(analytic, numeric)
        assert err <= tol, f"{name}: relative error {err:.2e} > {tol:.0e}"


def spread(shape, rng: np.random.Generator, gap: float = 0.05) -> np.ndarray:
    """Distinct float64 values at least ``gap`` apart and away from 0.

    Max pooling and ReLU are not differentiable at ties and at 0; inputs
    spaced far more than ``H`` apart keep the finite differences on one side.
    """
    n = int(np.prod(shape))
    values = (rng.permutation(n) - n / 2 + 0.25) * gap    # never exactly 0
    return values.reshape(shape)


class Holder(Module):
    """An empty parent so a layer can be registered under a name, e.g. ``fc1``."""


def as_child(layer: Module, name: str = "fc1") -> Module:
    """Register ``layer`` as child ``name`` of a fresh Holder; return the layer."""
    holder = Holder()
    setattr(holder, name, layer)
    return layer
