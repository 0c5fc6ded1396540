"""``load_dataset``: MNIST, Fashion-MNIST, KMNIST, CIFAR-10/100 and the sample.

Folders follow torchvision, so one data root serves both::

    root/MNIST/raw/train-images-idx3-ubyte.gz   (or without .gz)
    root/FashionMNIST/raw/...   root/KMNIST/raw/...
    root/cifar-10-python.tar.gz   (or an extracted root/cifar-10-batches-py/)
    root/cifar-100-python.tar.gz  (or root/cifar-100-python/)

``root`` defaults to ``$DFBST_DATA``, else ``~/.cache/dfbst_np``. Every file
is checked against its published checksum each time it is loaded.
Fashion-MNIST missing from ``root`` is taken from Debian's
``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``), whose
files are checked the same way. ``"sample"`` is the small Fashion-MNIST
subset committed in the repository's ``data/`` folder.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Union

import numpy as np

from ...errors import ConfigError, DataError
from .checksums import ChecksumError, hash_bytes
from .cifar import LAYOUTS, CifarFormatError, read_cifar_archive, read_cifar_folder
from .download import download as _download
from .idx import IdxFormatError, parse_idx
from .sample import load_sample_arrays
from .sources import FASHION_CLASSES, IDX_CLASSES, SOURCES, DatasetNotFoundError, RemoteFile

PathLike = Union[str, "os.PathLike[str]"]

DATA_ENV = "DFBST_DATA"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

DATASET_NAMES = ("mnist", "fashion_mnist", "kmnist", "cifar10", "cifar100", "sample")
_ALIASES = {"fashionmnist": "fashion_mnist", "fmnist": "fashion_mnist", "cifar_10": "cifar10",
            "cifar_100": "cifar100", "fashion_mnist_sample": "sample"}


@dataclass
class Dataset:
    """One split of a dataset, in memory.

    Attributes
    ----------
    images : numpy.ndarray
        float32, shape (N, C, H, W), values in [0, 1] (not normalised).
    labels : numpy.ndarray
        int64, shape (N,), values in [0, len(classes)).
    classes : list of str
    name : str
        The canonical dataset name (one of :data:`DATASET_NAMES`).
    train : bool
        True for the training split.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: List[str]
    name: str
    train: bool = True

    def __post_init__(self) -> None:
        x, y = self.images, self.labels
        if x.dtype != np.float32 or x.ndim != 4:
            raise ValueError(f"{self.name}: images must be float32 (N, C, H, W), got {x.dtype} {x.shape}")
        if y.dtype != np.int64 or y.shape != (x.shape[0],):
            raise ValueError(f"{self.name}: labels must be int64 ({x.shape[0]},), got {y.dtype} {y.shape}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def default_root() -> Path:
    """``$DFBST_DATA`` if set, else ``~/.cache/dfbst_np``."""
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dfbst_np"


def canonical_name(name: str) -> str:
    """Map ``"Fashion-MNIST"``, ``"cifar-10"``... to a name in :data:`DATASET_NAMES`."""
    key = str(name).strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in DATASET_NAMES:
        raise ConfigError(f"unknown dataset {name!r}; expected one of {DATASET_NAMES}")
    return key


def to_float_images(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W) or (N, C, H, W) -> float32 (N, C, H, W) in [0, 1].

    Divides by 255 in float32, as torchvision's ``ToTensor`` does, so the
    values are bit-identical to the reference's.
    """
    if images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {images.dtype}")
    x = images.astype(np.float32)
    if x.ndim == 3:
        x = x[:, None]
    x /= np.float32(255.0)
    return x


# -- the IDX family -------------------------------------------------------------

def verified_idx_bytes(folder: Path, rf: RemoteFile) -> Optional[bytes]:
    """The verified, decompressed bytes of ``rf`` in ``folder``.

    Tries ``name.gz`` (the published file, or a recompressed copy whose
    content matches) then ``name`` (torchvision keeps the gunzipped file
    too). Returns None if neither exists; raises ChecksumError if one
    exists but neither the file nor its content has the known checksum.
    """
    gz, plain = folder / rf.filename, folder / rf.filename[:-3]
    failure = None
    if gz.is_file():
        data = gz.read_bytes()
        got = hash_bytes(data, "md5")
        if got == rf.md5:
            return gzip.decompress(data)
        failure = ChecksumError(gz, "md5", rf.md5, got)
        if rf.content_md5 is not None:
            try:
                content = gzip.decompress(data)
            except (OSError, EOFError):
                content = None
            if content is not None and hash_bytes(content, "md5") == rf.content_md5:
                return content
    if plain.is_file() and rf.content_md5 is not None:
        data = plain.read_bytes()
        got = hash_bytes(data, "md5")
        if got == rf.content_md5:
            return data
        failure = failure or ChecksumError(plain, "md5", rf.content_md5, got)
    elif plain.is_file() and failure is None:
        failure = ChecksumError(plain, "md5", "(no published checksum for the unpacked file)",
                                hash_bytes(plain.read_bytes(), "md5"),
                                note=f"keep the published {rf.filename} beside it")
    if failure is not None:
        raise failure
    return None


def _missing_message(name: str, train: bool, folders: List[Path], files: List[str]) -> str:
    split = "train" if train else "test"
    where = " or ".join(str(f) for f in folders)
    lines = [f"{name} ({split} split) not found: expected {', '.join(files)} "
             f"(gzipped as published, or unpacked without .gz) in {where}.",
             "To get them: pass download=True (--download on the command line) to fetch them "
             f"from {SOURCES[name].mirrors[0]}, or point root= / ${DATA_ENV} at a folder holding "
             f"{SOURCES[name].folder}/."]
    if name == "fashion_mnist":
        lines.append(f"Offline: apt-get install dataset-fashion-mnist (puts them in {DEBIAN_FASHION_MNIST}).")
    return "\n".join(lines)


def _load_idx_dataset(name: str, root: Path, train: bool, download: bool, progress: bool) -> Dataset:
    src = SOURCES[name]
    folder = root / src.folder
    prefix = "train" if train else "t10k"
    wanted = [src.file(f"{prefix}-images-idx3-ubyte.gz"), src.file(f"{prefix}-labels-idx1-ubyte.gz")]
    fallbacks = [DEBIAN_FASHION_MNIST] if name == "fashion_mnist" else []
    arrays, missing = [], []
    for rf, ndim in zip(wanted, (3, 1)):
        try:
            data = verified_idx_bytes(folder, rf)
        except ChecksumError as exc:
            if not download:
                raise ChecksumError(exc.path, exc.algorithm, exc.expected, exc.got,
                                    note="delete it, or pass download=True to fetch a good copy") from None
            data = None  # download() below replaces the bad file
        for fb in fallbacks:
            if data is None and fb.is_dir():
                data = verified_idx_bytes(fb, rf)
        if data is None and download:
            _download(src.urls(rf.filename), folder / rf.filename, md5=rf.md5, progress=progress)
            data = verified_idx_bytes(folder, rf)
        if data is None:
            missing.append(rf.filename)
            continue
        arrays.append(parse_idx(data, f"{name}:{rf.filename}", expected_ndim=ndim))
    if missing:
        raise DatasetNotFoundError(_missing_message(name, train, [folder] + fallbacks, missing))
    images, labels = arrays
    if images.dtype != np.uint8 or labels.dtype != np.uint8 or len(images) != len(labels):
        raise IdxFormatError(f"{name}: expected uint8 images and labels of one length, got "
                         f"{images.dtype} {images.shape} and {labels.dtype} {labels.shape}")
    return Dataset(to_float_images(images), labels.astype(np.int64), list(IDX_CLASSES[name]), name, train)


# -- CIFAR ----------------------------------------------------------------------

def _load_cifar(name: str, root: Path, train: bool, download: bool, progress: bool) -> Dataset:
    rf = SOURCES[name].files[0]
    archive = root / rf.filename
    folder = root / LAYOUTS[name].base
    if folder.is_dir() and not archive.is_file():
        try:
            images, labels, classes = read_cifar_folder(folder, name, train)
            return Dataset(to_float_images(images), labels, classes, name, train)
        except DataError as exc:
            if not download:
                raise CifarFormatError(
                    f"{exc}\nThe extracted folder {folder} is damaged. Move it aside (or delete "
                    f"it) and put {rf.filename} in {root}, or pass download=True (--download on "
                    f"the command line): the archive is then fetched, checked and read instead, "
                    f"and the folder is left as it is.") from None
            # The archive, once fetched, takes precedence; the user's folder stays untouched.
    if download:
        # Verifies an existing archive, replaces a bad one, fetches a missing one.
        _download(SOURCES[name].urls(rf.filename), archive, md5=rf.md5, progress=progress)
    if archive.is_file():
        try:
            images, labels, classes = read_cifar_archive(archive, name, train, md5=rf.md5)
        except ChecksumError as exc:
            raise ChecksumError(exc.path, exc.algorithm, exc.expected, exc.got,
                                note="delete it, or pass download=True to fetch a good copy") from None
    else:
        raise DatasetNotFoundError(
            f"{name} not found: expected {archive} (or an extracted {folder}/).\n"
            f"To get it: pass download=True (--download on the command line) to fetch it from "
            f"{SOURCES[name].mirrors[0]}, or point root= / ${DATA_ENV} at a folder holding {rf.filename}.")
    return Dataset(to_float_images(images), labels, classes, name, train)


# -- the committed sample ---------------------------------------------------------

def _load_sample(train: bool) -> Dataset:
    arrays = load_sample_arrays()
    split = "train" if train else "test"
    images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
    return Dataset(to_float_images(images), labels.astype(np.int64), list(FASHION_CLASSES), "sample", train)


def load_dataset(name: str, root: Optional[PathLike] = None, train: bool = True,
                 download: bool = False, progress: bool = True) -> Dataset:
    """Load one split of a dataset as float32 images in [0, 1].

    Parameters
    ----------
    name : str
        ``"mnist"``, ``"fashion_mnist"``, ``"kmnist"``, ``"cifar10"``,
        ``"cifar100"`` or ``"sample"`` (a few spellings such as
        ``"Fashion-MNIST"`` are accepted).
    root : path-like, optional
        Data folder in torchvision's layout; default :func:`default_root`.
        Ignored for ``"sample"``.
    train : bool
        Training split if True, else the test split.
    download : bool
        Fetch missing or corrupt files from the known mirrors.
    progress : bool
        Progress bars while downloading.

    Returns
    -------
    Dataset
        images float32 (N, C, H, W) in [0, 1], labels int64 (N,), classes, name.

    Raises
    ------
    DatasetNotFoundError
        Saying which files were expected where and how to get them.
    ChecksumError
        Naming a file present but not matching its checksum.
    """
    name = canonical_name(name)
    if name == "sample":
        return _load_sample(train)
    root = default_root() if root is None else Path(root).expanduser()
    if name in IDX_CLASSES:
        return _load_idx_dataset(name, root, train, download, progress)
    return _load_cifar(name, root, train, download, progress)
