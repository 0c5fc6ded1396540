"""What :func:`~.verifier.verify` accepts: its errors, the name map from torch
names to dfbst_np names, and the checks of every argument (each error names
the argument and what was expected)."""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

from ..errors import DfbstError
from ..train.config import default_config

#: The settings of the reference step that verify accepts (SPEC section 7).
SETTINGS = ("lr", "momentum", "weight_decay", "alpha", "beta", "clip_norm", "milestones", "gamma")
MASKS = (".mask", ".dmask")


class VerifyError(DfbstError, ValueError):
    """verify could not run: its inputs are wrong (names the argument and what was expected)."""


class StepError(VerifyError):
    """The user's step function raised; the message says where, in their file."""


def default_settings(method: str = "dfbst") -> Dict[str, object]:
    """The reference settings of ``method`` (SPEC section 1; DST's own for ``dst``)."""
    cfg = default_config(method=method)
    return {key: getattr(cfg, key) for key in SETTINGS}


# -- names ------------------------------------------------------------------
class NameMap:
    """Torch names -> dfbst_np names: exact entries first, then the longest module prefix.

    ``{"net.0": "fc1"}`` maps ``net.0.weight`` to ``fc1.weight`` and
    ``net.0.mask`` to ``fc1.mask``; ``{"net.0.t": "fc1.threshold"}`` maps one
    name; ``{"net.0.M": "fc1.mask"}`` reads M from the attribute ``net.0.M``.
    """

    def __init__(self, mapping: Optional[Mapping[str, str]]) -> None:
        mapping = dict(mapping or {})
        for k, v in mapping.items():
            if not (isinstance(k, str) and isinstance(v, str)):
                raise VerifyError(f"verify: name_map must map str to str, got {k!r}: {v!r}")
        self.mapping = mapping
        self._prefixes = sorted(mapping, key=len, reverse=True)

    def __call__(self, name: str) -> str:
        if name in self.mapping:
            return self.mapping[name]
        for k in self._prefixes:
            if name.startswith(k + "."):
                v = self.mapping[k]
                return v + name[len(k):] if v else name[len(k) + 1:]
        return name

    def mask_paths(self, model: nn.Module) -> Dict[str, str]:
        """{torch attribute path: dfbst_np name} of every M and D the model exposes."""
        paths = {}
        for mod_name, module in model.named_modules():
            for attr in ("mask", "dmask"):
                if hasattr(module, attr):
                    path = f"{mod_name}.{attr}" if mod_name else attr
                    paths[path] = self(path)
        for k, v in self.mapping.items():
            if v.endswith(MASKS):
                paths[k] = v
        return {p: n for p, n in paths.items() if n.endswith(MASKS)}


def mapped(names: NameMap, items) -> Dict[str, object]:
    """``(name, value)`` pairs renamed by ``names``, masks left out; two names sent to one refused."""
    out, source = {}, {}
    for name, value in items:
        new = names(name)
        if new.endswith(MASKS):
            continue            # a mask kept as a buffer: compared in the mask stage
        if new in out:
            raise VerifyError(f"verify: name_map sends both {source[new]!r} and {name!r} to {new!r}")
        out[new], source[new] = value, name
    return out


def short_list(names: List[str], n: int = 8) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def state_difference(ours: Mapping[str, tuple], theirs: Mapping[str, tuple]) -> str:
    """'' when names and shapes agree, else what is missing, extra or of another shape."""
    missing = [k for k in ours if k not in theirs]
    extra = [k for k in theirs if k not in ours]
    shapes = [f"{k} {theirs[k]} (expected {ours[k]})" for k in ours
              if k in theirs and tuple(theirs[k]) != tuple(ours[k])]
    parts = []
    if missing:
        parts.append(f"missing in your model: {short_list(missing)}")
    if extra:
        parts.append(f"extra in your model: {short_list(extra)}")
    if shapes:
        parts.append(f"other shapes: {short_list(shapes)}")
    return "; ".join(parts)


def shapes_of(state: Mapping) -> Dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in state.items()}


# -- inputs -----------------------------------------------------------------
def check_schedule(schedule) -> List[Tuple[int, int]]:
    out = []
    try:
        for epoch, index in schedule:
            out.append((int(epoch), int(index)))
    except (TypeError, ValueError):
        raise VerifyError(f"verify: schedule must be a list of (epoch, index) pairs, got {schedule!r}") from None
    if not out:
        raise VerifyError("verify: schedule is empty")
    for k, (e, i) in enumerate(out):
        if e < 1 or i < 0 or (k and e < out[k - 1][0]):
            raise VerifyError(f"verify: schedule entry {k} is {(e, i)}; epochs count from 1, "
                              "indices from 0, and epochs never decrease")
    return out


def check_batches(batches) -> List[Tuple[np.ndarray, np.ndarray]]:
    out = []
    try:
        pairs = list(batches)
    except TypeError:
        raise VerifyError(f"verify: batches must be a list of (x, y), got {type(batches).__name__}") from None
    for k, pair in enumerate(pairs):
        try:
            x, y = pair
        except (TypeError, ValueError):
            raise VerifyError(f"verify: batch {k} is not an (x, y) pair") from None
        x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        y = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
        if x.dtype.kind != "f" or y.dtype.kind not in "iu":
            raise VerifyError(f"verify: batch {k} must hold float images and integer labels, "
                              f"got {x.dtype} and {y.dtype}")
        if y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise VerifyError(f"verify: batch {k}: x has shape {x.shape}, y {y.shape}; "
                              "expected (N, ...) and (N,)")
        # verify runs in float64 (SPEC section 7): the cast is the point, not an accident
        out.append((x.astype(np.float64), y.astype(np.int64)))
    if not out:
        raise VerifyError("verify: batches is empty")
    return out


def check_settings(method: str, settings) -> Dict[str, object]:
    merged = default_settings(method)
    unknown = sorted(set(settings or {}) - set(SETTINGS))
    if unknown:
        raise VerifyError(f"verify: unknown settings {unknown}; expected some of {list(SETTINGS)}")
    merged.update(settings or {})
    for key in ("lr", "momentum", "weight_decay", "alpha", "beta", "gamma"):
        merged[key] = check_number(merged[key], f"settings[{key!r}]")
    if merged["clip_norm"] is not None:
        merged["clip_norm"] = check_number(merged["clip_norm"], "settings['clip_norm']", positive=True)
    try:
        merged["milestones"] = tuple(int(m) for m in merged["milestones"])
    except (TypeError, ValueError):
        raise VerifyError(f"verify: settings['milestones'] must be epoch numbers, got "
                          f"{merged['milestones']!r}") from None
    return merged


def check_number(value, what: str, positive: bool = False) -> float:
    """``value`` as a float when it is finite and >= 0 (> 0 if ``positive``); VerifyError naming ``what``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = None
    if isinstance(value, bool) or number is None or not np.isfinite(number) or number < 0 \
            or (positive and number == 0):
        raise VerifyError(f"verify: {what} must be a finite number {'> 0' if positive else '>= 0'}, "
                          f"got {value!r}")
    return number
