"""Files replaced atomically: a temporary file beside the target, fsync, rename.

Every file dfbst_np writes that a user or a later run reads (checkpoints,
metrics.csv, config.json, plots, the kernel-cost cache) is written here: a
crash at any moment leaves the old file or the new one, never half of one.
The temporary file has a name unique to the write (``<name>.<8 random
characters>.tmp``, as ``tempfile.mkstemp`` names them), so two writers never
share one; a killed writer's file is removed by
:func:`remove_stale_temp_files` when the folder is next used.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Callable, List, Optional

from .errors import is_disk_error, storage_error
from .interrupts import deferred

__all__ = ["write_via_temp", "write_atomic", "remove_stale_temp_files"]

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


def write_via_temp(path, write: Callable, passing: Optional[Callable[[str], None]] = None) -> None:
    """Call ``write(file)`` on a new temporary file beside ``path``, fsync, rename over ``path``.

    A failure at any moment leaves ``path`` as it was and no temporary file; a
    failure the user's disk causes (full, read-only, ...) is a one-line
    :class:`~dfbst_np.errors.StorageError` naming ``path``. ``passing``, if
    given, is called with ``"opened"`` and ``"written"`` as the write passes
    those points (the crash tests' kill points).
    """
    path = Path(path)
    tmp = f = None
    try:
        with deferred():        # Ctrl-C cannot fall between creating the file and knowing its name
            fd, tmp = _create_temp(path)
            f = os.fdopen(fd, "wb")
        with f:
            if passing:
                passing("opened")
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if passing:
            passing("written")
        os.replace(tmp, path)
    except BaseException as e:
        if f is not None:
            try:
                f.close()
            except OSError:
                pass
        if tmp is not None:
            try:
                Path(tmp).unlink(missing_ok=True)
            except OSError:
                pass                        # e.g. a read-only disk: e says what went wrong
        if is_disk_error(e):
            raise storage_error(e, f"write {path}") from None
        raise


def write_atomic(path, data: bytes) -> None:
    """Replace ``path``'s content with ``data`` atomically (:func:`write_via_temp`)."""
    write_via_temp(path, lambda f: f.write(data))


def remove_stale_temp_files(path) -> List[Path]:
    """Delete the temporary files a killed write of ``path`` left.

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
