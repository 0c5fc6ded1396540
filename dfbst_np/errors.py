"""The errors a user can cause, as opposed to our own bugs.

Everything the command line prints as one line (``error: ...``, exit 2)
derives from :class:`DfbstError`; anything else is a bug and keeps its
traceback. Each class also derives from the built-in exception a caller of
the library would expect (``ValueError``, ``FileNotFoundError``...), so
``except ValueError`` keeps working. This module imports nothing of ours:
every layer may use it.
"""
from __future__ import annotations


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


class TrainingDivergedError(DfbstError, FloatingPointError):
    """The loss or a gradient became NaN or infinite during training."""
