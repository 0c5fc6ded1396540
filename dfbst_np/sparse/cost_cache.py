r"""The cost model's constants for this machine: measured once, cached in the user's cache folder.

The ``"auto"`` path (:mod:`dfbst_np.sparse.costs`) needs a few per-element
costs of the kernels (:class:`~dfbst_np.sparse.costs.KernelCosts`). They
depend on the CPU, the BLAS kernel and NumPy, so constants fitted on one
machine pick the slower path on another. On first use per dtype they are
measured here (a few seconds: :func:`dfbst_np.bench.crossover.quick_costs`)
and written to

    ``$XDG_CACHE_HOME/dfbst_np/costs-<key>.json`` (``~/.cache/dfbst_np/`` without it)

where the key is a hash of the CPU model, the BLAS kernel (threadpoolctl's
``architecture``) and the NumPy version, so a new machine, BLAS or NumPy
measures again. The file is written atomically (a temporary file, then a
rename); a file that cannot be read or does not hold what it should is
ignored and measured again; a cache folder that cannot be written leaves the
measured costs in memory for this process only.

The environment variable ``DFBST_NP_COST_MODEL`` chooses the model:
``measured`` (the default, as above) or ``builtin`` (the constants fitted on
the developers' machine, :data:`dfbst_np.sparse.costs.BUILTIN`; no
measurement, no file: what the tests use, so that nothing they assert depends
on this machine's timings).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import asdict, fields
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from ..atomic import write_atomic

__all__ = ["MODELS", "model_choice", "cache_dir", "machine_key", "cache_path", "read", "write",
           "cpu_model", "blas_kernel", "FORMAT"]

#: Accepted values of ``DFBST_NP_COST_MODEL``.
MODELS = ("measured", "builtin")
#: Version of the cache file's layout (a file of another version is measured again).
FORMAT = 1


def model_choice() -> str:
    """``DFBST_NP_COST_MODEL`` (default ``measured``); ValueError naming it for another value."""
    choice = os.environ.get("DFBST_NP_COST_MODEL", "measured").strip() or "measured"
    if choice not in MODELS:
        raise ValueError(f"DFBST_NP_COST_MODEL must be one of {MODELS}, got {choice!r}")
    return choice


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/dfbst_np``, or ``~/.cache/dfbst_np`` when it is unset or not absolute."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".cache"
    return root / "dfbst_np"


def cpu_model() -> str:
    """The CPU's model name with its family and model numbers (``/proc/cpuinfo``: a
    virtual machine may report only "AMD EPYC"); ``platform.processor()`` elsewhere."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "cpu family", "model") and key not in fields:
                    fields[key] = value.strip()
                if not line.strip() and fields:
                    break                       # the first processor is enough
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine() or "unknown"
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def blas_kernel() -> str:
    """NumPy's BLAS and the kernel it runs on this CPU (threadpoolctl), e.g. ``openblas SkylakeX``."""
    from threadpoolctl import threadpool_info
    libs = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    ours = [i for i in libs if "numpy" in i.get("filepath", "")] or libs
    if not ours:
        return "unknown"
    info = ours[0]
    return f"{info.get('internal_api', '?')} {info.get('version', '?')} {info.get('architecture', '?')}"


def machine_key() -> Dict[str, str]:
    """What the costs depend on: CPU model, BLAS kernel, NumPy version."""
    return {"cpu": cpu_model(), "blas": blas_kernel(), "numpy": np.__version__}


def cache_path(key: Optional[Dict[str, str]] = None) -> Path:
    """The cache file for ``key`` (this machine's by default)."""
    key = machine_key() if key is None else key
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"costs-{digest}.json"


def read(path: Path, key: Dict[str, str], cls) -> Dict[np.dtype, object]:
    """The costs per dtype in ``path`` if it is a valid cache file for ``key``; else {}.

    Anything wrong (missing, unreadable, not JSON, another key or format, a
    missing or non-finite or negative field) gives {}: the costs are then
    measured again.
    """
    try:
        with open(path) as f:
            data = json.load(f)
        if data.get("format") != FORMAT or data.get("key") != key:
            return {}
        names = [f.name for f in fields(cls)]
        out = {}
        for dtype, values in data["costs"].items():
            numbers = [float(values[n]) for n in names]
            if not all(np.isfinite(v) and v >= 0 for v in numbers):
                return {}
            out[np.dtype(dtype)] = cls(*numbers)
        return out
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def write(path: Path, key: Dict[str, str], costs: Dict[np.dtype, object]) -> bool:
    """Write ``costs`` for ``key`` atomically; False (and nothing written) if the folder is not writable."""
    data = {"format": FORMAT, "key": key,
            "costs": {np.dtype(dt).name: asdict(c) for dt, c in costs.items()}}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(data, indent=1, sort_keys=True).encode())
    except OSError:             # StorageError included: the costs stay in memory only
        return False
    return True
