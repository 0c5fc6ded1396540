"""Which kernels the products use: ``"dense"``, ``"sparse"`` or ``"auto"``.

Every product in :mod:`dfbst_np.sparse.products` and
:mod:`dfbst_np.sparse.sampled` takes a ``path`` argument; None means the
module default kept here, which starts as ``"auto"`` (the cost model of
:mod:`dfbst_np.sparse.costs` chooses). :func:`use_path` sets it for a block.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

__all__ = ["PATHS", "check_path", "resolve_path", "set_default_path", "get_default_path",
           "use_path"]

#: The accepted values of every ``path`` argument.
PATHS = ("dense", "sparse", "auto")

_default_path = "auto"


def check_path(path, allow_none: bool = True) -> Optional[str]:
    """``path`` itself if it is one of :data:`PATHS` (or None when allowed); else ValueError."""
    if path is None and allow_none:
        return None
    if not isinstance(path, str) or path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}" + (" or None" if allow_none else "")
                         + f", got {path!r}")
    return path


def resolve_path(path: Optional[str]) -> str:
    """A checked ``path``, or the module default when it is None."""
    path = check_path(path)
    return path if path is not None else _default_path


def set_default_path(path: str) -> str:
    """Set the module-wide default path; return the previous one.

    Parameters
    ----------
    path : {"dense", "sparse", "auto"}
        Used by every product whose own ``path`` argument is None.

    Returns
    -------
    str
        The default before this call (so that callers can restore it).
    """
    global _default_path
    check_path(path, allow_none=False)
    previous, _default_path = _default_path, path
    return previous


def get_default_path() -> str:
    """The module-wide default path: ``"dense"``, ``"sparse"`` or ``"auto"``."""
    return _default_path


@contextlib.contextmanager
def use_path(path: str) -> Iterator[str]:
    """Context manager: set the default path inside the block, restore it after.

    Examples
    --------
    >>> with use_path("dense"):
    ...     mw = prepare_weight(w_hat)      # doctest: +SKIP
    """
    previous = set_default_path(path)
    try:
        yield path
    finally:
        set_default_path(previous)
