"""The Module base class: named parameters, gradients, buffers and children.

Every layer in dfbst_np is a Module with an explicit ``forward`` and
``backward``. A Module holds

* ``_params``   own learnable arrays, e.g. ``{"weight": W, "bias": b}``;
* ``_grads``    their gradients from the last ``backward`` (a key is absent
  when that parameter received no gradient: "no gradient" is not "zero");
* ``_buffers``  own non-learnable state (BatchNorm's running statistics);
* children      sub-modules registered by attribute assignment, as in PyTorch.

``params``, ``grads`` and ``state_dict()`` walk the tree and key everything by
PyTorch's dotted names (``layer1.0.conv1.weight``), so a state dict moves
between dfbst_np and PyTorch unchanged.
"""
from __future__ import annotations

from typing import Dict, Iterator, Tuple

import numpy as np


class Module:
    """Base class of every layer and model.

    Subclasses implement ``forward(x)`` (which may keep what the backward
    needs in ``self._cache``) and ``backward(dy)`` (which fills
    ``self._grads`` and returns the gradient with respect to the input).
    """

    def __init__(self) -> None:
        object.__setattr__(self, "_children", {})
        self._params: Dict[str, np.ndarray] = {}
        self._grads: Dict[str, np.ndarray] = {}
        self._buffers: Dict[str, np.ndarray] = {}
        self._name = ""  # dotted path in the model; "" for a root module
        self._cache = None
        self.training = True

    # -- registration ---------------------------------------------------
    def __setattr__(self, key, value):
        if isinstance(value, Module):
            self._children[key] = value
            value._set_name(f"{self._name}.{key}" if self._name else key)
        elif key in self._children:
            del self._children[key]     # a child replaced by a plain value is gone
        object.__setattr__(self, key, value)

    def _set_name(self, name: str) -> None:
        """Give this module (and its children) its dotted path for messages."""
        self._name = name
        for key, child in self._children.items():
            child._set_name(f"{name}.{key}")

    @property
    def name(self) -> str:
        """Dotted path of this module in its model ("" for the root)."""
        return self._name

    def describe(self) -> str:
        """``'fc1 (MaskedLinear)'``: how error messages name a layer."""
        cls = type(self).__name__
        return f"{self._name} ({cls})" if self._name else cls

    # -- tree walks ----------------------------------------------------
    def named_children(self) -> Iterator[Tuple[str, "Module"]]:
        return iter(self._children.items())

    def named_modules(self, prefix: str = "") -> Iterator[Tuple[str, "Module"]]:
        """Yield ``(dotted name, module)`` for this module and all below it."""
        yield prefix, self
        for key, child in self._children.items():
            yield from child.named_modules(f"{prefix}.{key}" if prefix else key)

    def modules(self) -> Iterator["Module"]:
        for _, m in self.named_modules():
            yield m

    def _collect(self, attr: str) -> Dict[str, np.ndarray]:
        out: Dict[str, np.ndarray] = {}
        for prefix, m in self.named_modules():
            own = getattr(m, attr)
            # Gradients follow the parameters' order, whatever order backward filled them in.
            keys = [k for k in m._params if k in own] if attr == "_grads" else list(own)
            for key in keys:
                out[f"{prefix}.{key}" if prefix else key] = own[key]
        return out

    @property
    def params(self) -> Dict[str, np.ndarray]:
        """Learnable arrays by dotted name (references: update them in place)."""
        return self._collect("_params")

    @property
    def grads(self) -> Dict[str, np.ndarray]:
        """Gradients of the last backward, by dotted name (absent: no gradient)."""
        return self._collect("_grads")

    @property
    def buffers(self) -> Dict[str, np.ndarray]:
        return self._collect("_buffers")

    @property
    def pending_output_shape(self):
        """The output shape of the last forward that has no backward yet (its cache's
        ``y_shape``), or None when there is none (what a backward checks dy against)."""
        return None if self._cache is None else tuple(self._cache.y_shape)

    def set_grad(self, name: str, grad: np.ndarray) -> None:
        """Set the gradient of this module's own parameter ``name`` (a trainer adding
        a term that the backward does not know, such as a penalty's)."""
        if name not in self._params:
            raise KeyError(f"{self.describe()}: no parameter {name!r}; it has {list(self._params)}")
        self._grads[name] = grad

    def zero_grad(self) -> None:
        """Forget all gradients (PyTorch's ``set_to_none=True``)."""
        for m in self.modules():
            m._grads.clear()

    # -- modes ---------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        for m in self.modules():
            m.training = mode
        return self

    def eval(self) -> "Module":
        return self.train(False)

    # -- state dicts ---------------------------------------------------
    def state_dict(self) -> Dict[str, np.ndarray]:
        """Copies of all parameters and buffers, in PyTorch's order and names."""
        out: Dict[str, np.ndarray] = {}
        for prefix, m in self.named_modules():
            for key, value in list(m._params.items()) + list(m._buffers.items()):
                out[f"{prefix}.{key}" if prefix else key] = value.copy()
        return out

    def load_state_dict(self, state: Dict[str, np.ndarray]) -> None:
        """Copy ``state`` into this module's arrays in place.

        Keys must match exactly and shapes must be equal; values are cast to
        the existing array's dtype as ``torch.Tensor.copy_`` does (a float32
        PyTorch checkpoint loads into a float64 model).
        """
        own = {}
        for prefix, m in self.named_modules():
            for key, value in list(m._params.items()) + list(m._buffers.items()):
                own[f"{prefix}.{key}" if prefix else key] = value
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise KeyError(
                f"{self.describe()}: state dict does not match; "
                f"missing keys {missing}, unexpected keys {unexpected}")
        for key, dst in own.items():
            src = np.asarray(state[key])
            if src.shape != dst.shape:
                raise ValueError(
                    f"{self.describe()}: '{key}' expected shape {dst.shape}, got {src.shape}")
            np.copyto(dst, src, casting="unsafe")

    # -- the layer interface --------------------------------------------
    def forward(self, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, dy):  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, x):
        return self.forward(x)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for key, child in self._children.items():
            sub = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({key}): {sub}")
        return lines[0] + ")" if len(lines) == 1 else "\n".join(lines) + "\n)"
