"""The errors a user can cause, as opposed to our own bugs.

Everything the command line prints as one line (``error: ...``, exit 2)
derives from :class:`DfbstError`; anything else is a bug and keeps its
traceback. Each class also derives from the built-in exception a caller of
the library would expect (``ValueError``, ``FileNotFoundError``...), so
``except ValueError`` keeps working. This module imports nothing of ours:
every layer may use it.
"""
from __future__ import annotations

import errno


class DfbstError(Exception):
    """A mistake or an unlucky state the user can fix; the message says how."""


class ConfigError(DfbstError, ValueError):
    """A setting (a command-line flag or a config.json entry) has an invalid value."""


class RunFolderError(DfbstError):
    """A run folder cannot be used as asked: it exists, is not a run, or is inconsistent."""


class CheckpointError(DfbstError, ValueError):
    """A checkpoint file is missing, truncated, corrupt or of the wrong kind."""


class DataError(DfbstError):
    """A dataset file is missing, corrupt, unsafe or cannot be downloaded."""


class StorageError(DfbstError, OSError):
    """A file or folder cannot be read or written: no space left, a read-only disk, a name
    too long, no permission, a folder where a file should be; or too little memory."""


class FolderInUseError(RunFolderError):
    """Another process is writing to the run folder (it holds the folder's lock)."""


class TrainingDivergedError(DfbstError, FloatingPointError):
    """The loss or a gradient became NaN or infinite during training."""


# errno values a user's disk, files or limits cause, never our code; the hint says what to do.
_DISK_HINTS = {
    "ENOSPC": "the disk is full: free some space, or use a folder on another disk",
    "EDQUOT": "the disk quota is used up: free some space, or use a folder on another disk",
    "EFBIG": "the file would be larger than this file system allows: use a folder on another disk",
    "EROFS": "the disk is read-only: copy the folder to a writable disk, or use another folder",
    "ENAMETOOLONG": "a name is too long for this file system: choose a shorter one",
    "EACCES": "permission denied: use a folder you may write to",
    "EPERM": "the operation is not permitted here: use a folder you may write to",
    "EISDIR": "a folder is where a file should be: move it away",
    "ENOTDIR": "a file is where a folder should be: choose another path",
    "ELOOP": "too many symbolic links: choose another path",
    "EIO": "the disk reported an input/output error",
    "EMFILE": "too many files are open in this process",
    "ENFILE": "too many files are open on this machine",
}
DISK_ERRNOS = frozenset(getattr(errno, name) for name in _DISK_HINTS if hasattr(errno, name))


def is_disk_error(e: BaseException) -> bool:
    """True for an OSError a user's disk, files or limits cause (never a bug of ours)."""
    return isinstance(e, OSError) and e.errno in DISK_ERRNOS


def storage_error(e: OSError, doing: str) -> StorageError:
    """``doing`` failed because of ``e``: a one-line :class:`StorageError` with what to do.

    ``doing`` says what was attempted ("write /runs/a/checkpoint.npz"); the
    message adds the file the system named, if another, and the hint.
    """
    name = errno.errorcode.get(e.errno or 0, "")
    hint = _DISK_HINTS.get(name, e.strerror or str(e))
    where = f" ({e.filename})" if e.filename and str(e.filename) not in doing else ""
    err = StorageError(f"cannot {doing}{where}: {e.strerror or e}; {hint}")
    err.errno = e.errno
    return err
