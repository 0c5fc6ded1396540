"""The data layer: datasets, checked downloads, batching and augmentation.

Files, one idea each:

* ``datasets``    ``load_dataset(name, root, train, download)`` -> :class:`Dataset`
* ``sample``      the Fashion-MNIST subset committed in ``data/``
* ``sources``     mirrors, published checksums and class names of every dataset
* ``download``    mirror fallback, ``.part`` files, checksum before use
* ``checksums``   md5 / sha256 of files and bytes, :class:`ChecksumError`
* ``idx``         the IDX format of the MNIST family
* ``cifar``       CIFAR python archives, read without extracting
* ``safe_pickle`` an unpickler that can only rebuild NumPy arrays
* ``loader``      seeded batches, CIFAR crop/flip and normalisation
"""
from .checksums import ChecksumError, hash_file, verify_file
from .cifar import CifarFormatError, UnsafeArchiveError, read_cifar_archive, read_cifar_folder
from .datasets import DATASET_NAMES, Dataset, default_root, load_dataset, to_float_images
from .download import DownloadError, IncompleteDownloadError, download, part_path
from .idx import IdxFormatError, parse_idx, read_idx
from .loader import (CIFAR_MEAN, CIFAR_STD, cifar_test_transform, cifar_train_transform, crop,
                     hflip, iterate_batches, normalize, random_crop_flip)
from .safe_pickle import MalformedPickleError, RestrictedUnpickler, UnsafePickleError, safe_loads
from .sample import SAMPLE_PATH, SAMPLE_SHA256, load_sample_arrays
from .sources import SOURCES, DatasetNotFoundError

__all__ = [
    "CIFAR_MEAN", "CIFAR_STD", "ChecksumError", "CifarFormatError", "DATASET_NAMES", "Dataset",
    "DatasetNotFoundError", "DownloadError", "IdxFormatError", "IncompleteDownloadError",
    "MalformedPickleError",
    "RestrictedUnpickler", "SAMPLE_PATH", "SAMPLE_SHA256", "SOURCES", "UnsafeArchiveError",
    "UnsafePickleError",
    "cifar_test_transform", "cifar_train_transform", "crop", "default_root", "download",
    "hash_file", "hflip", "iterate_batches", "load_dataset", "load_sample_arrays", "normalize",
    "parse_idx", "part_path", "random_crop_flip", "read_cifar_archive", "read_cifar_folder",
    "read_idx", "safe_loads", "to_float_images", "verify_file",
]
