"""One writer per run folder: a lock that ``train``, ``--resume`` and ``--overwrite`` hold.

The lock is ``flock`` (POSIX; a locked byte on Windows) on :data:`LOCK` in the
run folder. The kernel releases it when its process ends, however it ends
(``kill -9`` included), so a lock file a killed writer left behind blocks no
one; the writer that holds it removes it when done. The file holds the
holder's pid and what it is doing, for the one-line refusal another writer
gets. Taking a lock this process already holds nests (the CLI holds a
resumed folder's lock from before it reads config.json; the run loop takes
it again while it trains).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict

from ..errors import FolderInUseError, is_disk_error, storage_error

try:                                # POSIX; Windows locks a byte of the file instead
    import fcntl
except ImportError:                 # pragma: no cover
    fcntl = None
    import msvcrt

__all__ = ["LOCK", "FolderLock", "lock_folder"]

#: The lock file of a run folder (hidden; removed by the writer that made it when it ends).
LOCK = ".dfbst_np.lock"


class FolderLock:
    """The lock of a run folder, held by this process (see :func:`lock_folder`)."""

    def __init__(self, folder: Path, fd: int) -> None:
        self.folder, self.fd, self.depth = folder, fd, 1

    @property
    def path(self) -> Path:
        return self.folder / LOCK

    def moved_to(self, folder: Path) -> None:
        """The folder (and the lock file in it) was renamed to ``folder``."""
        _HELD.pop(_key(self.folder), None)
        self.folder = Path(folder)
        _HELD[_key(self.folder)] = self

    def release(self) -> None:
        self.depth -= 1
        if self.depth > 0:
            return
        if _HELD.get(_key(self.folder)) is self:
            del _HELD[_key(self.folder)]
        try:
            if _same_file(self.fd, self.path):
                self.path.unlink()          # while still locked: no one else holds this file
        except OSError:
            pass                            # a read-only disk: the stale file is harmless
        os.close(self.fd)

    def __enter__(self) -> "FolderLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


_HELD: Dict[str, FolderLock] = {}       # the folders this process holds, by real path


def _key(folder: Path) -> str:
    return os.path.realpath(folder)


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _try_lock(fd: int) -> bool:
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:                                                   # pragma: no cover
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except (BlockingIOError, PermissionError):
        return False
    return True


def lock_folder(out, doing: str) -> FolderLock:
    """Take the lock of the existing folder ``out`` for this process, or refuse at once.

    The lock is ``flock`` on ``out/.dfbst_np.lock`` (the kernel releases it
    when the process ends, however it ends); the file holds the holder's pid
    and ``doing``, for the message another writer gets. Taking it again in
    the same process nests. Use it as a context manager, or call
    :meth:`FolderLock.release`.

    Raises
    ------
    FolderInUseError
        If another process holds it: one line naming the folder and the holder.
    StorageError
        If the lock file cannot be made (a read-only disk, no permission...).
    """
    out = Path(out)
    held = _HELD.get(_key(out))
    if held is not None:
        held.depth += 1
        return held
    path = out / LOCK
    for _ in range(100):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            if is_disk_error(e):
                raise storage_error(e, f"lock the run folder {out} (for {doing})") from None
            raise
        if not _try_lock(fd):
            try:
                holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "starting"
            except OSError:
                holder = "unknown"
            os.close(fd)
            raise FolderInUseError(
                f"{out} is in use by another dfbst_np process (pid {holder}); one writer at a "
                f"time: wait for it to end, or stop it, then run this again")
        if _same_file(fd, path):
            break
        os.close(fd)                # its holder removed it as we opened it: lock the new one
    else:                           # pragma: no cover
        raise FolderInUseError(f"{out}: could not take the folder's lock; try again")
    try:                            # who holds it, for the other writers' message (best effort)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}, {doing}\n".encode())
    except OSError:
        pass
    lock = _HELD[_key(out)] = FolderLock(out, fd)
    return lock
