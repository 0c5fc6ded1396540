"""State dicts and checkpoints between PyTorch and NumPy.

Both directions keep names, order, shapes and dtypes: a float64 tensor
becomes a float64 array and back, and BatchNorm's ``num_batches_tracked``
stays a 0-d int64. A reference checkpoint converted to NumPy loads unchanged
into a dfbst_np model (SPEC section 3).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Dict, Optional, Union

import numpy as np
import torch
import torch.nn as nn


def to_numpy_state_dict(torch_sd: Union[Mapping, nn.Module]) -> Dict[str, np.ndarray]:
    """Copy a torch state dict (or a module's) into NumPy arrays.

    Parameters
    ----------
    torch_sd : mapping of str to torch.Tensor, or torch.nn.Module

    Returns
    -------
    dict of str to numpy.ndarray
        Independent copies, same keys and order, same dtypes (0-d arrays stay
        0-d arrays, not NumPy scalars).
    """
    if isinstance(torch_sd, nn.Module):
        torch_sd = torch_sd.state_dict()
    out: Dict[str, np.ndarray] = {}
    for key, value in torch_sd.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"to_numpy_state_dict: '{key}' is a {type(value).__name__}, not a tensor")
        out[key] = np.array(value.detach().cpu().numpy(), copy=True)
    return out


def to_torch_state_dict(np_sd: Mapping, like: Optional[Union[Mapping, nn.Module]] = None
                        ) -> Dict[str, torch.Tensor]:
    """Copy NumPy arrays into a torch state dict.

    Parameters
    ----------
    np_sd : mapping of str to array-like
    like : torch state dict or torch.nn.Module, optional
        When given, the keys must match it exactly and the shapes must agree;
        each tensor then takes ``like``'s dtype (so a float64 NumPy state
        loads into a float32 model the way ``Tensor.copy_`` would), and the
        result is in ``like``'s key order. Without it dtypes are preserved.

    Returns
    -------
    dict of str to torch.Tensor
        Tensors that own their memory; ``num_batches_tracked`` is 0-d int64.
    """
    if isinstance(like, nn.Module):
        like = like.state_dict()
    if like is not None:
        missing = sorted(set(like) - set(np_sd))
        unexpected = sorted(set(np_sd) - set(like))
        if missing or unexpected:
            raise KeyError(f"to_torch_state_dict: keys differ from the target; missing {missing}, "
                           f"unexpected {unexpected}")
        keys = list(like)
    else:
        keys = list(np_sd)
    out: Dict[str, torch.Tensor] = {}
    for key in keys:
        arr = np.array(np_sd[key], copy=True)
        tensor = torch.from_numpy(arr)
        if key.endswith("num_batches_tracked"):
            # torch requires this counter to be an int64 scalar.
            if arr.size != 1:
                raise ValueError(f"to_torch_state_dict: '{key}' must hold one integer, got shape {arr.shape}")
            tensor = tensor.reshape(()).to(torch.int64)
        if like is not None:
            ref = like[key]
            if tuple(tensor.shape) != tuple(ref.shape):
                raise ValueError(f"to_torch_state_dict: '{key}' expected shape {tuple(ref.shape)}, "
                                 f"got {tuple(tensor.shape)}")
            tensor = tensor.to(ref.dtype)
        out[key] = tensor
    return out


def _unwrap(obj, path) -> Mapping:
    """Find the state dict inside what ``torch.save`` stored."""
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                return _unwrap(obj[key], path)
    raise ValueError(f"load_checkpoint: {path} holds no state dict of tensors "
                     f"(got {type(obj).__name__})")


def load_checkpoint(path: Union[str, os.PathLike]) -> Dict[str, np.ndarray]:
    """Read a PyTorch checkpoint safely and return its state dict as NumPy arrays.

    Uses ``torch.load(..., weights_only=True)``, so no pickled code runs.
    Accepts a bare state dict (what the reference's ``save_model`` writes) or
    a dict holding one under ``state_dict``, ``model_state_dict`` or ``model``.
    """
    obj = torch.load(path, map_location="cpu", weights_only=True)
    return to_numpy_state_dict(_unwrap(obj, path))


def save_checkpoint(state: Union[Mapping, nn.Module], path: Union[str, os.PathLike]) -> None:
    """Write a state dict (NumPy arrays, tensors, or a torch module's) with ``torch.save``.

    The file is a plain state dict of tensors, loadable by the reference's
    ``model.load_state_dict(torch.load(path))`` and by :func:`load_checkpoint`.
    """
    if isinstance(state, nn.Module):
        state = state.state_dict()
    tensors = {k: (v.detach().cpu().clone() if isinstance(v, torch.Tensor) else None)
               for k, v in state.items()}
    rest = {k: state[k] for k, v in tensors.items() if v is None}
    if rest:
        tensors.update(to_torch_state_dict(rest))
        tensors = {k: tensors[k] for k in state}
    torch.save(tensors, path)
