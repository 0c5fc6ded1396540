"""File and byte checksums, and the error every integrity check raises.

Only md5 and sha256 are used: md5 because the published dataset checksums
(torchvision's tables, the datasets' own pages) are md5, sha256 for the files
this project makes itself (the committed sample).
"""
from __future__ import annotations

import hashlib
import os
from typing import Optional, Tuple, Union

from ...errors import DataError

PathLike = Union[str, "os.PathLike[str]"]

ALGORITHMS = ("md5", "sha256")
_CHUNK = 1 << 20


class ChecksumError(DataError, ValueError):
    """A file's checksum differs from the one it must have.

    Attributes
    ----------
    path : str
        The file (or the name of the data) that failed.
    algorithm : str
        ``"md5"`` or ``"sha256"``.
    expected, got : str
        Hex digests.
    """

    def __init__(self, path: PathLike, algorithm: str, expected: str, got: str,
                 note: str = "") -> None:
        self.path = os.fspath(path)
        self.algorithm = algorithm
        self.expected = expected
        self.got = got
        msg = (f"{self.path}: {algorithm} checksum mismatch: expected {expected}, "
               f"got {got}")
        super().__init__(msg + (f" ({note})" if note else ""))


def new_hash(algorithm: str):
    """Return a fresh hashlib object for ``algorithm`` ("md5" or "sha256")."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown checksum algorithm {algorithm!r}; expected one of {ALGORITHMS}")
    if algorithm == "md5":
        # md5 identifies published files here; it is not used for security.
        return hashlib.md5(usedforsecurity=False)
    return hashlib.sha256()


def hash_bytes(data: bytes, algorithm: str = "sha256") -> str:
    """Hex digest of ``data``."""
    h = new_hash(algorithm)
    h.update(data)
    return h.hexdigest()


def hash_file(path: PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of the file at ``path``, read in 1 MiB chunks."""
    h = new_hash(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def pick_checksum(md5: Optional[str] = None, sha256: Optional[str] = None) -> Tuple[str, str]:
    """Return ``(algorithm, lower-case digest)`` from exactly one of the two.

    Raises
    ------
    ValueError
        If neither or both are given, or the digest has the wrong length.
    """
    if (md5 is None) == (sha256 is None):
        raise ValueError("give exactly one of md5= or sha256=")
    algorithm, digest = ("md5", md5) if md5 is not None else ("sha256", sha256)
    digest = str(digest).strip().lower()
    want = 32 if algorithm == "md5" else 64
    if len(digest) != want or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"{algorithm} checksum must be {want} hex digits, got {digest!r}")
    return algorithm, digest


def verify_bytes(data: bytes, name: PathLike, md5: Optional[str] = None,
                 sha256: Optional[str] = None) -> None:
    """Raise :class:`ChecksumError` naming ``name`` unless ``data`` matches."""
    algorithm, expected = pick_checksum(md5, sha256)
    got = hash_bytes(data, algorithm)
    if got != expected:
        raise ChecksumError(name, algorithm, expected, got)


def verify_file(path: PathLike, md5: Optional[str] = None, sha256: Optional[str] = None) -> None:
    """Raise :class:`ChecksumError` naming ``path`` unless the file matches.

    A missing file raises ``FileNotFoundError`` as usual.
    """
    algorithm, expected = pick_checksum(md5, sha256)
    got = hash_file(path, algorithm)
    if got != expected:
        raise ChecksumError(path, algorithm, expected, got)
