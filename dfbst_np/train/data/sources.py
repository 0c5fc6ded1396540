"""Where each dataset comes from, and the checksums its files must have.

Mirror URLs and the md5 of each published file are the ones torchvision's
``datasets/mnist.py`` and ``datasets/cifar.py`` list (pytorch/vision), so a
folder torchvision filled is accepted here and the other way round. Mirrors
are tried in the order given.

``content_md5`` is the md5 of the *decompressed* IDX file where it is
publicly known (the values Fashion-MNIST's and MNIST's users record for the
gunzipped files). It lets a repacked but identical file pass: Debian's
``dataset-fashion-mnist`` recompressed the four .gz files (their own md5s
differ from upstream's) but their decompressed bytes match these exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from ...errors import DataError


@dataclass(frozen=True)
class RemoteFile:
    """One published file: its name, md5, and md5 of its decompressed bytes."""

    filename: str
    md5: str
    content_md5: Optional[str] = None


@dataclass(frozen=True)
class Source:
    """A dataset's published files.

    Attributes
    ----------
    folder : str
        Folder under ``root`` as torchvision lays it out: ``"MNIST/raw"`` for
        the IDX datasets, ``""`` for the CIFAR archives (``root/<archive>``).
    mirrors : tuple of str
        Base URLs ending in ``/``; a file's URL is ``mirror + filename``.
    files : tuple of RemoteFile
    """

    folder: str
    mirrors: Tuple[str, ...]
    files: Tuple[RemoteFile, ...]

    def file(self, filename: str) -> RemoteFile:
        """The entry named ``filename``."""
        for f in self.files:
            if f.filename == filename:
                return f
        raise KeyError(f"{filename!r} is not one of {[f.filename for f in self.files]}")

    def urls(self, filename: str) -> Tuple[str, ...]:
        """Every mirror's URL for ``filename``, in the order to try them."""
        return tuple(m + filename for m in self.mirrors)


SOURCES: Dict[str, Source] = {
    "mnist": Source(
        folder="MNIST/raw",
        # torchvision lists yann.lecun.com first; it often refuses downloads
        # (HTTP 403), so the S3 copy goes first here.
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "http://yann.lecun.com/exdb/mnist/"),
        files=(
            RemoteFile("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                       "6bbc9ace898e44ae57da46a324031adb"),
            RemoteFile("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432",
                       "a25bea736e30d166cdddb491f175f624"),
            RemoteFile("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3",
                       "2646ac647ad5339dbf082846283269ea"),
            RemoteFile("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c",
                       "27ae3e4e09519cfbb04c329615203637"),
        ),
    ),
    "fashion_mnist": Source(
        folder="FashionMNIST/raw",
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                 "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
        files=(
            RemoteFile("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                       "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
            RemoteFile("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe",
                       "9018921c3c673c538a1fc5bad174d6f9"),
            RemoteFile("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79",
                       "8181f5470baa50b63fa0f6fddb340f0a"),
            RemoteFile("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310",
                       "15d484375f8d13e6eb1aabb0c3f46965"),
        ),
    ),
    "kmnist": Source(
        folder="KMNIST/raw",
        mirrors=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        # No public md5 of the decompressed KMNIST files is known here, so
        # only the .gz files as published are accepted.
        files=(
            RemoteFile("train-images-idx3-ubyte.gz", "bdb82020997e1d708af4cf47b453dcf7"),
            RemoteFile("train-labels-idx1-ubyte.gz", "e144d726b3acfaa3e44228e80efcd344"),
            RemoteFile("t10k-images-idx3-ubyte.gz", "5c965bf0a639b31b8f53240b1b52f4d7"),
            RemoteFile("t10k-labels-idx1-ubyte.gz", "7320c461ea6c1c855c0b718fb2a4b134"),
        ),
    ),
    "cifar10": Source(
        folder="",
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        files=(RemoteFile("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),),
    ),
    "cifar100": Source(
        folder="",
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        files=(RemoteFile("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),),
    ),
}

# md5 of each pickle inside the CIFAR archives (torchvision's lists): they
# let an already extracted ``cifar-10-batches-py/`` folder be verified file
# by file before anything in it is unpickled.
CIFAR_MEMBER_MD5: Dict[str, Dict[str, str]] = {
    "cifar10": {
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
        "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    },
    "cifar100": {
        "train": "16019d7e3df5f24257cddd939b257f8d",
        "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
        "meta": "7973b15100ade9c7d40fb424638fde48",
    },
}

# Class names, in label order, as torchvision gives them.
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]
IDX_CLASSES = {
    "mnist": ["0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five",
              "6 - six", "7 - seven", "8 - eight", "9 - nine"],
    "fashion_mnist": FASHION_CLASSES,
    "kmnist": ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"],
}


class DatasetNotFoundError(DataError, FileNotFoundError):
    """A dataset's files are not where they were looked for; says how to get them."""
