"""Checkpoints as .npz files: written atomically, read without pickles.

A checkpoint is a flat ``{key: array}`` dict. Keys are prefixed by what they
belong to (``model/fc1.weight``, ``optim/momentum_buffer.fc1.weight``,
``sched/last_epoch``, ``meta/epoch``). Writing goes to a temporary file in
the same folder, is flushed to disk, then renamed over the old checkpoint
(:mod:`dfbst_np.atomic`): a crash at any moment leaves either the old or the
new file, never half of one. Reading uses
``allow_pickle=False``, so a checkpoint can hold arrays only and loading one
can never run code; :func:`check_entries` then checks every entry's name,
shape and dtype against what the run expects, before anything is loaded.
"""
from __future__ import annotations

import math
import os
import signal
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Mapping, Optional

import numpy as np

from ..atomic import write_via_temp
from ..errors import CheckpointError, StorageError, is_disk_error, storage_error

__all__ = ["CheckpointError", "EntryHeader", "check_entries", "kill_point", "load_checkpoint",
           "read_headers", "save_checkpoint", "strip_prefix", "with_prefix"]

# Fault injection for the crash and concurrency tests: DFBST_KILL_AT="point:n" makes
# the process SIGKILL itself the n-th time it passes ``point``; DFBST_STOP_AT="point:n"
# makes it SIGSTOP itself there (a test then acts while it holds its state, and SIGCONTs it).
KILL_ENV, STOP_ENV = "DFBST_KILL_AT", "DFBST_STOP_AT"
_passes: Dict[str, int] = {}


def kill_point(point: str) -> None:
    """Die (SIGKILL) or stop (SIGSTOP) here if ``$DFBST_KILL_AT`` or ``$DFBST_STOP_AT`` names this pass."""
    specs = [(os.environ.get(KILL_ENV), signal.SIGKILL),
             (os.environ.get(STOP_ENV), getattr(signal, "SIGSTOP", None))]
    if not any(spec for spec, _ in specs):
        return
    _passes[point] = n = _passes.get(point, 0) + 1
    for spec, sig in specs:
        name, _, count = (spec or "").partition(":")
        if name == point and n == int(count or 1) and sig is not None:
            os.kill(os.getpid(), sig)


def save_checkpoint(path, arrays: Dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` atomically (temp file, fsync, rename: :mod:`dfbst_np.atomic`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_via_temp(path, lambda f: np.savez(f, **arrays),
                   passing=lambda stage: kill_point(f"checkpoint-{stage}"))


@dataclass(frozen=True)
class EntryHeader:
    """What a checkpoint entry's npy header declares (read before any array is allocated)."""
    shape: tuple
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _corrupt(path, why) -> CheckpointError:
    return CheckpointError(f"checkpoint {path} is corrupt or not a dfbst_np checkpoint ({why})")


def read_headers(path) -> Dict[str, EntryHeader]:
    """The shape and dtype of every entry of the checkpoint ``path``, from the npy headers alone.

    Each header must describe exactly the bytes its zip member holds, so that
    loading the checkpoint never allocates more than the file's own size
    (a header may declare any shape, 2**40 elements included).

    Raises
    ------
    CheckpointError
        Naming the file and the entry whose header is unreadable, declares
        objects (pickles) or more or fewer bytes than the entry holds.
    StorageError
        If the disk does not let the file be read.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist"
                              + (" (a folder is there)" if path.is_dir() else ""))
    fmt = np.lib.format
    headers: Dict[str, EntryHeader] = {}
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    raise _corrupt(path, f"member {info.filename!r} is not an array")
                # Stored, as np.savez writes: the sizes the directory declares are bytes on disk.
                if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size \
                        or info.header_offset + info.compress_size > size:
                    raise _corrupt(path, f"member {info.filename!r} is compressed or declares "
                                         f"more bytes than the file holds")
                key = info.filename[:-len(".npy")]
                with zf.open(info) as f:
                    version = fmt.read_magic(f)
                    read = {(1, 0): fmt.read_array_header_1_0,
                            (2, 0): fmt.read_array_header_2_0}.get(version)
                    if read is None:
                        raise _corrupt(path, f"entry {key!r}: npy format {version} is not supported")
                    shape, _, dtype = read(f)
                    stored = info.file_size - f.tell()
                if dtype.hasobject:
                    raise _corrupt(path, f"entry {key!r} holds Python objects; only arrays are read")
                header = EntryHeader(tuple(int(n) for n in shape), dtype)
                if header.nbytes != stored:
                    raise _corrupt(path, f"entry {key!r} declares shape {header.shape} of {dtype} "
                                         f"({header.nbytes} bytes) but holds {stored} bytes")
                headers[key] = header
    except CheckpointError:
        raise
    except OSError as e:
        if is_disk_error(e):
            raise storage_error(e, f"read {path}") from None
        raise _corrupt(path, e) from None
    except (zipfile.BadZipFile, ValueError, EOFError, TypeError) as e:
        raise _corrupt(path, e) from None
    return headers


def load_checkpoint(path, keys: Optional[Iterable[str]] = None) -> Dict[str, np.ndarray]:
    """Read a checkpoint written by :func:`save_checkpoint` (no pickles allowed).

    Every entry's header is checked first (:func:`read_headers`); ``keys``
    (default: all) are then loaded.
    """
    path = Path(path)
    headers = read_headers(path)
    keys = list(headers) if keys is None else [k for k in keys if k in headers]
    try:
        with np.load(path, allow_pickle=False) as z:
            return {key: z[key] for key in keys}
    except MemoryError:
        raise StorageError(f"not enough memory to read {path} "
                           f"({sum(headers[k].nbytes for k in keys)} bytes)") from None
    except OSError as e:
        if is_disk_error(e):
            raise storage_error(e, f"read {path}") from None
        raise _corrupt(path, e) from None
    except (zipfile.BadZipFile, ValueError, EOFError) as e:
        raise _corrupt(path, e) from None


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
