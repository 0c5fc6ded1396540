"""Checkpoints as .npz files: written atomically, read without pickles.

A checkpoint is a flat ``{key: array}`` dict. Keys are prefixed by what they
belong to (``model/fc1.weight``, ``optim/momentum_buffer.fc1.weight``,
``sched/last_epoch``, ``meta/epoch``). Writing goes to a temporary file in
the same folder, is flushed to disk, then renamed over the old checkpoint:
a crash at any moment leaves either the old or the new file, never half of
one (a killed writer's temporary file is removed by
:func:`remove_stale_temp_files` when the folder is next used). Reading uses
``allow_pickle=False``, so a checkpoint can hold arrays only and loading one
can never run code; :func:`check_entries` then checks every entry's name,
shape and dtype against what the run expects, before anything is loaded.
"""
from __future__ import annotations

import os
import secrets
import signal
import zipfile
from pathlib import Path
from typing import Dict, List, Mapping

import numpy as np

from ..errors import CheckpointError

__all__ = ["CheckpointError", "check_entries", "load_checkpoint", "remove_stale_temp_files",
           "save_checkpoint", "strip_prefix", "with_prefix"]

# Fault injection for the crash tests: DFBST_KILL_AT="point:n" makes the process
# SIGKILL itself the n-th time it passes ``point`` (see :func:`kill_point`).
KILL_ENV = "DFBST_KILL_AT"
_passes: Dict[str, int] = {}


def kill_point(point: str) -> None:
    """Die here, as ``kill -9`` would, if ``$DFBST_KILL_AT`` names this pass."""
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    _passes[point] = n = _passes.get(point, 0) + 1
    name, _, count = spec.partition(":")
    if name == point and n == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)


_TEMP_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"     # as in tempfile.mkstemp's names
_MKSTEMP_CHARS = set(_TEMP_CHARS)


def _temp_prefix(path: Path) -> str:
    return path.name + "."


def _create_temp(path: Path):
    """(fd, path) of a new ``<name>.<8 random characters>.tmp`` beside ``path``, open for writing.

    Named as tempfile.mkstemp names its files, and as exclusive (O_EXCL), but
    created with mode 0666 less the umask like any file the user writes:
    mkstemp's files are 0600.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.parent / (_temp_prefix(path) + "".join(secrets.choice(_TEMP_CHARS) for _ in range(8))
                             + ".tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def save_checkpoint(path, arrays: Dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` atomically (temp file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            kill_point("checkpoint-opened")
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        kill_point("checkpoint-written")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temp_files(path) -> List[Path]:
    """Delete the temporary files a killed :func:`save_checkpoint` of ``path`` left.

    Only names of our own pattern (``<name>.<8 random characters>.tmp``, as
    ``tempfile.mkstemp`` makes them) are touched. Call it only when no other
    process is writing to the folder: at the start of a run or a resume.
    """
    path = Path(path)
    removed = []
    for p in path.parent.glob(_temp_prefix(path) + "*.tmp"):
        middle = p.name[len(_temp_prefix(path)):-len(".tmp")]
        if p.is_file() and len(middle) == 8 and set(middle) <= _MKSTEMP_CHARS:
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def load_checkpoint(path) -> Dict[str, np.ndarray]:
    """Read a checkpoint written by :func:`save_checkpoint` (no pickles allowed)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {key: z[key] for key in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise CheckpointError(f"checkpoint {path} is corrupt or not a dfbst_np checkpoint ({e})") from None


def with_prefix(prefix: str, arrays: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    return {f"{prefix}/{k}": np.asarray(v) for k, v in arrays.items()}


def strip_prefix(prefix: str, arrays: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    p = prefix + "/"
    return {k[len(p):]: v for k, v in arrays.items() if k.startswith(p)}


def check_entries(path, arrays: Mapping[str, np.ndarray], required: Mapping[str, np.ndarray],
                  optional: Mapping[str, np.ndarray] = None) -> None:
    """Check a loaded checkpoint entry by entry against the arrays a run would write.

    Parameters
    ----------
    path : path-like
        The checkpoint file, named in every message.
    arrays : dict
        What :func:`load_checkpoint` returned.
    required : dict
        ``{key: template}``: each key must be present with exactly the
        template's shape and dtype (no cast is ever made silently, so a
        float32 checkpoint is refused by a float64 run and int or complex
        weights are refused by both).
    optional : dict, optional
        Templates of keys that may be absent (masks, momentum buffers).

    Raises
    ------
    CheckpointError
        Naming the file and the first entry that is missing, unexpected or
        of the wrong shape or dtype.
    """
    optional = optional or {}
    missing = sorted(set(required) - set(arrays))
    if missing:
        raise CheckpointError(f"{path}: entry {missing[0]!r} is missing"
                              + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                              + "; the checkpoint does not belong to this run's config.json")
    unknown = sorted(set(arrays) - set(required) - set(optional))
    if unknown:
        raise CheckpointError(f"{path}: unexpected entry {unknown[0]!r}; the checkpoint does "
                              f"not belong to this run's config.json")
    for key, value in arrays.items():
        want = required.get(key, optional.get(key))
        if value.shape != want.shape:
            raise CheckpointError(f"{path}: entry {key!r} has shape {value.shape}, "
                                  f"expected {want.shape}")
        if value.dtype != want.dtype:
            raise CheckpointError(f"{path}: entry {key!r} has dtype {value.dtype}, expected "
                                  f"{want.dtype} (nothing is cast silently)")
