"""PyTorch helpers for parity tests (tests only: the package never imports torch)."""
from __future__ import annotations

from typing import Dict

import numpy as np
import torch

TOL = 1e-10


def t64(a: np.ndarray, grad: bool = False):
    """A float64 torch tensor copy of ``a``."""
    t = torch.tensor(np.asarray(a, dtype=np.float64))
    return t.requires_grad_(grad)


def load_into_torch(tmod, module) -> None:
    """Copy a dfbst_np module's state dict into the torch module (float64)."""
    tmod.double()
    tmod.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in module.state_dict().items()})


def torch_param_grads(tmod) -> Dict[str, np.ndarray]:
    return {k: p.grad.numpy() for k, p in tmod.named_parameters() if p.grad is not None}
