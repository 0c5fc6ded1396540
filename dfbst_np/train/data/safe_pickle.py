"""A pickle loader that can rebuild NumPy arrays and nothing else.

CIFAR's "python version" batches are pickled dicts of lists, bytes and one
uint8 ndarray. Rebuilding the array takes exactly three globals:
``numpy.core.multiarray._reconstruct`` (``numpy._core`` in NumPy 2),
``numpy.ndarray`` and ``numpy.dtype``. Any other global in the stream --
``os.system``, ``builtins.eval``, ``subprocess.Popen``... -- is refused
before it is looked up, so a hostile pickle cannot run code through
:func:`safe_loads`. Callers still check the checksum first: this is the
second wall, not the first.
"""
from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np

from ...errors import DataError
try:  # NumPy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]

# (module, name) as written in the pickle -> the object it may resolve to.
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class UnsafePickleError(DataError, pickle.UnpicklingError):
    """A pickle referenced a global outside :data:`ALLOWED_GLOBALS`."""


class MalformedPickleError(DataError, pickle.UnpicklingError):
    """A pickle stream is truncated or malformed."""


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose ``find_class`` only resolves :data:`ALLOWED_GLOBALS`.

    Parameters
    ----------
    file : binary file
    name : str
        How errors name the source of the pickle.
    """

    def __init__(self, file, name: str = "<pickle>") -> None:
        # encoding="bytes": CIFAR's pickles come from Python 2, and their
        # str keys (b'data', b'labels') must stay bytes, as CIFAR documents.
        super().__init__(file, encoding="bytes")
        self._name = name

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._name}: pickle references {module}.{name}, which is not allowed; "
                f"only {sorted(f'{m}.{n}' for m, n in ALLOWED_GLOBALS)} are") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self._name}: pickle uses persistent ids, which are not allowed")


def safe_loads(data: bytes, name: str = "<pickle>") -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`.

    Raises
    ------
    UnsafePickleError
        If the pickle references any global but NumPy's array rebuilders.
    MalformedPickleError
        Naming ``name`` if the stream is malformed (a ``pickle.UnpicklingError``).
    """
    try:
        return RestrictedUnpickler(io.BytesIO(data), name).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError) as exc:
        raise MalformedPickleError(f"{name}: malformed pickle ({exc})") from exc
