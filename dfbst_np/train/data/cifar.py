"""Readers for CIFAR-10 and CIFAR-100 "python version" archives.

Safety, in order:

1. the archive is read into memory once and its md5 checked on those very
   bytes, so nothing can swap the file between check and use;
2. every member name is vetted (no absolute paths, no ``..``, no links or
   devices) and a suspicious archive is refused whole;
3. the members needed are read straight out of the tar stream; nothing is
   ever extracted to disk;
4. each pickle is loaded with :mod:`.safe_pickle`, which can rebuild NumPy
   arrays and nothing else, and its content is checked (dtype, shapes,
   label range) before it is returned.

An already extracted folder (torchvision's ``cifar-10-batches-py/``) is
also read, each file checked against its published md5 first.
"""
from __future__ import annotations

import io
import os
import posixpath
import tarfile
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple, Union

import numpy as np

from ...errors import DataError
from .checksums import verify_bytes
from .safe_pickle import safe_loads
from .sources import CIFAR_MEMBER_MD5, SOURCES

PathLike = Union[str, "os.PathLike[str]"]

# A real CIFAR member is at most ~160 MB (CIFAR-100 "train"); anything far
# larger is a decompression bomb, not CIFAR.
_MAX_MEMBER_BYTES = 512 << 20


class UnsafeArchiveError(DataError, ValueError):
    """A tar archive has a member that could escape the folder it belongs in."""


class CifarFormatError(DataError, ValueError):
    """A CIFAR archive or pickle lacks what the format requires."""


@dataclass(frozen=True)
class CifarLayout:
    """How one CIFAR variant is laid out inside its archive."""

    base: str                    # folder inside the archive
    train: Tuple[str, ...]       # pickles of the training split
    test: Tuple[str, ...]
    meta: str                    # pickle with the class names
    label_key: bytes
    names_key: bytes
    num_classes: int


LAYOUTS = {
    "cifar10": CifarLayout("cifar-10-batches-py",
                           tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                           "batches.meta", b"labels", b"label_names", 10),
    "cifar100": CifarLayout("cifar-100-python", ("train",), ("test",),
                            "meta", b"fine_labels", b"fine_label_names", 100),
}


def _layout(dataset: str) -> CifarLayout:
    try:
        return LAYOUTS[dataset]
    except KeyError:
        raise ValueError(f"unknown CIFAR dataset {dataset!r}; expected one of {sorted(LAYOUTS)}") from None


def check_member(member: tarfile.TarInfo, archive: str) -> None:
    """Refuse a tar member that is not a plain file or folder inside the archive.

    Raises
    ------
    UnsafeArchiveError
        Naming the archive and member, for absolute names, ``..`` parts,
        symbolic or hard links, devices and FIFOs.
    """
    name = member.name
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} would escape the target folder")
    if not (member.isfile() or member.isdir()):
        raise UnsafeArchiveError(f"{archive}: member {name!r} is a link or special file, refused")


def _get(d: Any, key: bytes, where: str) -> Any:
    """``d[key]``, also accepting the str key of a pickle written by Python 3."""
    if not isinstance(d, dict):
        raise CifarFormatError(f"{where}: expected a pickled dict, got {type(d).__name__}")
    for k in (key, key.decode()):
        if k in d:
            return d[k]
    raise CifarFormatError(f"{where}: missing key {key!r} (has {sorted(map(repr, d))})")


def _batch_arrays(obj: Any, layout: CifarLayout, where: str) -> Tuple[np.ndarray, np.ndarray]:
    """Check one unpickled batch and return (images (n,3,32,32) uint8, labels int64)."""
    data = _get(obj, b"data", where)
    labels = _get(obj, layout.label_key, where)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise CifarFormatError(f"{where}: 'data' must be a uint8 array of shape (n, 3072), got {desc}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise CifarFormatError(f"{where}: labels are not integers ({exc})") from exc
    if labels.shape != (data.shape[0],):
        raise CifarFormatError(f"{where}: {labels.shape} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= layout.num_classes):
        raise CifarFormatError(f"{where}: labels outside [0, {layout.num_classes})")
    # Rows are the R, G, B planes of a 32x32 image, one after another.
    return data.reshape(-1, 3, 32, 32), labels


def _class_names(obj: Any, layout: CifarLayout, where: str) -> List[str]:
    names = _get(obj, layout.names_key, where)
    if not isinstance(names, list) or len(names) != layout.num_classes \
            or not all(isinstance(n, (bytes, str)) for n in names):
        raise CifarFormatError(f"{where}: expected {layout.num_classes} class names")
    return [n.decode("utf-8") if isinstance(n, bytes) else n for n in names]


def _assemble(blobs, layout, where_prefix):
    """Unpickle the (name, bytes) batches and the meta; concatenate."""
    images, labels, classes = [], [], None
    for member, blob in blobs:
        where = f"{where_prefix}:{member}"
        obj = safe_loads(blob, where)
        if member == layout.meta:
            classes = _class_names(obj, layout, where)
        else:
            x, y = _batch_arrays(obj, layout, where)
            images.append(x)
            labels.append(y)
    return np.concatenate(images), np.concatenate(labels), classes


def read_cifar_archive(path: PathLike, dataset: str = "cifar10", train: bool = True,
                       md5: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """Read one split of a CIFAR python ``.tar.gz`` without extracting it.

    Parameters
    ----------
    path : path-like
        ``cifar-10-python.tar.gz`` or ``cifar-100-python.tar.gz``.
    dataset : {"cifar10", "cifar100"}
    train : bool
        The training split (``data_batch_1..5`` / ``train``) or the test split.
    md5 : str, optional
        The archive's md5; defaults to the published one. Nothing is
        unpickled unless the archive matches it.

    Returns
    -------
    images : numpy.ndarray
        uint8, shape (N, 3, 32, 32).
    labels : numpy.ndarray
        int64, shape (N,); CIFAR-100's fine labels.
    classes : list of str

    Raises
    ------
    ChecksumError, UnsafeArchiveError, CifarFormatError, UnsafePickleError
        Each naming the archive (and member).
    """
    layout = _layout(dataset)
    archive = os.fspath(path)
    if md5 is None:
        md5 = SOURCES[dataset].files[0].md5
    with open(archive, "rb") as f:
        raw = f.read()
    verify_bytes(raw, archive, md5=md5)
    wanted = (layout.train if train else layout.test) + (layout.meta,)
    blobs = []
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:*") as tar:
            members = tar.getmembers()
            for m in members:
                check_member(m, archive)
            by_name = {posixpath.normpath(m.name): m for m in members if m.isfile()}
            for name in wanted:
                m = by_name.get(f"{layout.base}/{name}")
                if m is None:
                    raise CifarFormatError(f"{archive}: member {layout.base}/{name} is missing")
                if m.size > _MAX_MEMBER_BYTES:
                    raise CifarFormatError(
                        f"{archive}: member {m.name} is {m.size} bytes, too large for CIFAR")
                blobs.append((name, tar.extractfile(m).read()))
    except tarfile.TarError as exc:
        raise CifarFormatError(f"{archive}: not a readable tar archive ({exc})") from exc
    return _assemble(blobs, layout, archive)


def read_cifar_folder(folder: PathLike, dataset: str = "cifar10", train: bool = True,
                      member_md5: Optional[dict] = None) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """Read one split from an extracted folder (``cifar-10-batches-py/``).

    Each pickle is read once, checked against ``member_md5[name]`` (default:
    the published md5s) and only then unpickled. Same returns and errors as
    :func:`read_cifar_archive`.
    """
    layout = _layout(dataset)
    md5s = CIFAR_MEMBER_MD5[dataset] if member_md5 is None else member_md5
    folder = os.fspath(folder)
    blobs = []
    for name in (layout.train if train else layout.test) + (layout.meta,):
        path = os.path.join(folder, name)
        try:
            with open(path, "rb") as f:
                blob = f.read()
        except OSError as exc:
            raise CifarFormatError(f"{path}: cannot read it ({exc.strerror or exc})") from None
        verify_bytes(blob, path, md5=md5s[name])
        blobs.append((name, blob))
    return _assemble(blobs, layout, folder)
