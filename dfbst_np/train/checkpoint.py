"""Checkpoints as .npz files: written atomically, read without pickles.

A checkpoint is a flat ``{key: array}`` dict. Keys are prefixed by what they
belong to (``model/fc1.weight``, ``optim/momentum_buffer.fc1.weight``,
``sched/last_epoch``, ``meta/epoch``). Writing goes to a temporary file in
the same folder, is flushed to disk, then renamed over the old checkpoint:
a crash at any moment leaves either the old or the new file, never half of
one. Reading uses ``allow_pickle=False``, so a checkpoint can hold arrays
only and loading one can never run code.
"""
from __future__ import annotations

import os
import secrets
import zipfile
from pathlib import Path
from typing import Dict

import numpy as np


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt or of the wrong kind."""


def save_checkpoint(path, arrays: Dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` atomically (temp file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkstemp: its files are 0600. O_EXCL on a fresh name gives the
    # same safety, and mode 0666 lets the umask decide, as for any file written.
    tmp = path.parent / f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
