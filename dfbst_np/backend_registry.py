"""The run loop's backends besides NumPy, by name: a registry others add themselves to.

``dfbst_np.train`` looks a backend up here and never imports it; the
``dfbst_np`` package registers ``torch`` (:mod:`dfbst_np.reference.backend`)
as a loader that imports it only when a run chooses it. A loader returns an
object (a module) with ``check_device(device)`` and ``make_backend(cfg,
initial_model, num_classes)``, or raises
:class:`dfbst_np.train.backend.BackendUnavailable`. This module imports nothing.
"""
from __future__ import annotations

from typing import Callable, Dict

_LOADERS: Dict[str, Callable[[], object]] = {}


def register_backend(name: str, loader: Callable[[], object]) -> None:
    """Make ``--backend name`` available; ``loader`` is called only when it is chosen."""
    if name == "numpy" or name in _LOADERS:
        raise ValueError(f"register_backend: a backend named {name!r} exists already")
    _LOADERS[name] = loader


def backend_names():
    """Every backend a run may choose: numpy, then the registered ones."""
    return ("numpy",) + tuple(_LOADERS)


def load_backend(name: str):
    """The registered backend ``name``, loaded (KeyError for an unknown one)."""
    return _LOADERS[name]()
