"""Sequential: a chain of modules named "0", "1", ... as in PyTorch."""
from __future__ import annotations

from typing import Iterator

import numpy as np

from .module import Module


class Sequential(Module):
    r"""Apply modules in order; backpropagate through them in reverse.

    .. math::
        y = f_{K-1}(\cdots f_1(f_0(x))), \qquad
        \frac{\partial L}{\partial x} = J_{f_0}^\top \cdots J_{f_{K-1}}^\top \frac{\partial L}{\partial y}

    Children are named ``"0"``, ``"1"``, ..., so the state-dict keys are
    PyTorch's (``features.3.weight``). Each child checks its own input and
    keeps its own cache; Sequential keeps nothing.

    Parameters
    ----------
    *modules : Module
    """

    def __init__(self, *modules: Module) -> None:
        super().__init__()
        for i, module in enumerate(modules):
            if not isinstance(module, Module):
                raise TypeError(f"Sequential: argument {i} is a {type(module).__name__}, "
                                f"not a Module")
            setattr(self, str(i), module)

    def __len__(self) -> int:
        return len(self._children)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._children.values())

    def __getitem__(self, index: int) -> Module:
        # No slices: a slice would re-parent the children and rename them.
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"{self.describe()}: index with an int, got {type(index).__name__}")
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"{self.describe()}: index {index} out of range for {n} modules")
        return self._children[str(index % n)]

    def forward(self, x):
        """x -> y through every child in order."""
        for module in self:
            x = module.forward(x)
        return x

    def backward(self, dy):
        """dy -> dx through every child in reverse order."""
        for module in reversed(list(self)):
            dy = module.backward(dy)
        return dy
