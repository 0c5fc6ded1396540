"""Importing PyTorch, where a command needs it, with one line when it cannot be imported.

A missing torch, a broken install (a shared library that fails to load: OSError),
a ``torch.py`` of the user's that shadows it, anything its import raises: the
user's environment, not a bug of ours, so the CLI reports it in one line
(:class:`TorchUnavailable`, exit 2). Our own modules are imported after this
check, so an ImportError of ours keeps its traceback. Only commands that go on to
use :mod:`dfbst_np.reference` (the one package that uses torch) call it.
"""
from __future__ import annotations

import importlib

from .errors import ConfigError

INSTALL = "pip install torch==2.13.0"


class TorchUnavailable(ConfigError):
    """PyTorch cannot be imported here (a user's environment, not a bug)."""


def require_torch(who: str) -> None:
    """Import torch, or raise :class:`TorchUnavailable` naming ``who`` (the command or flag
    that needs it) and why the import failed."""
    try:
        importlib.import_module("torch")
    except ModuleNotFoundError as e:
        if e.name != "torch":
            raise TorchUnavailable(f"{who}: PyTorch cannot be imported ({e}); reinstall it "
                                   f"with: {INSTALL}") from None
        raise TorchUnavailable(f"{who}: PyTorch is not installed; install it with: "
                               f"{INSTALL}") from None
    except Exception as e:          # noqa: BLE001 - anything a broken install raises
        first = str(e).splitlines()[0] if str(e).strip() else "no message"
        raise TorchUnavailable(f"{who}: PyTorch cannot be imported ({type(e).__name__}: "
                               f"{first}); check the install, or reinstall it with: "
                               f"{INSTALL}") from None
