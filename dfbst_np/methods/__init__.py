"""Sparse-training methods as plug-ins (SPEC section 8): the registry.

>>> from dfbst_np import methods
>>> methods.names()[:3]
('dense', 'dst', 'dfbst')
>>> methods.get("dfbst").params
('threshold', 'dthreshold')

A method is one module here: a :class:`~.base.Method` with a name, a paper,
its reference settings and two :class:`~.base.Implementation` objects
(``fast`` and ``textbook``) with the same hooks (docs/SPEC.md, "Method
hooks"). Layers and the Trainer are handed an implementation and call only
its hooks: this package is the only place that knows method names.
"""
from __future__ import annotations

from typing import Dict, Tuple, Union

from .base import (WEIGHT_GRAD_MODES, WEIGHT_GRADS, Backward, Implementation, Method, Settings,
                   StepInfo, StepPlan)

__all__ = ["names", "get", "register", "implementation", "Method", "Implementation", "Settings",
           "StepPlan", "StepInfo", "Backward", "WEIGHT_GRADS", "WEIGHT_GRAD_MODES"]

_REGISTRY: Dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` to the registry under its name; a name already taken is a ValueError."""
    if not isinstance(method, Method):
        raise TypeError(f"methods.register: expected a Method, got {type(method).__name__}")
    if method.name in _REGISTRY:
        raise ValueError(f"methods.register: a method named {method.name!r} is already "
                         f"registered ({_REGISTRY[method.name].paper})")
    _REGISTRY[method.name] = method
    return method


def names() -> Tuple[str, ...]:
    """The registered methods' names, in registration order."""
    return tuple(_REGISTRY)


def get(name: Union[str, Method]) -> Method:
    """The method registered as ``name``; an unknown name is a ValueError listing the known ones.

    A Method is returned as it is, so that a function taking ``method`` accepts either.
    """
    if isinstance(name, Method):
        return name
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown method {name!r}; expected one of {names()}") from None


def implementation(method: Union[str, Method, Implementation], kind: str = "fast") -> Implementation:
    """The implementation object a layer or a trainer is given.

    ``method`` is a registered name, a Method (its ``kind`` implementation is
    taken) or an Implementation (returned as it is: e.g. a wrapped one that
    times its hooks).
    """
    if isinstance(getattr(method, "method", None), Method):
        return method                  # an implementation, or an object wrapping one
    if isinstance(method, Implementation):
        raise ValueError("methods.implementation: this implementation belongs to no Method")
    if isinstance(method, str):
        method = get(method)
    if not isinstance(method, Method):
        raise TypeError(f"expected a method name, a Method or an Implementation, "
                        f"got {type(method).__name__}")
    return method.implementation(kind)


def _register_builtin() -> None:
    from . import dense, dfbst, dst, gmp, rigl
    from . import set as set_
    for module in (dense, dst, dfbst, gmp, set_, rigl):
        register(module.METHOD)


_register_builtin()
