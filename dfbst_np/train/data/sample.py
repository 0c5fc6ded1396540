"""The Fashion-MNIST sample committed in the repository's ``data/`` folder.

``data/fashion_mnist_sample.npz`` is made by ``data/make_sample.py``; see
``data/README.md`` for its provenance. It is read only after its sha256
matches, and with ``allow_pickle=False``.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Optional, Union

import numpy as np

from .checksums import verify_bytes
from .sources import DatasetNotFoundError

PathLike = Union[str, "os.PathLike[str]"]

SAMPLE_PATH = Path(__file__).resolve().parents[3] / "data" / "fashion_mnist_sample.npz"
# sha256 of data/fashion_mnist_sample.npz as committed (data/README.md).
SAMPLE_SHA256 = "ba9545599970e7826c83d5a2e92346f9be084311b0760d5a4c7fa3f10f36ef55"


def load_sample_arrays(path: PathLike = SAMPLE_PATH, sha256: Optional[str] = None) -> dict:
    """The sample's uint8 arrays, after checking the file's sha256.

    Returns
    -------
    dict
        ``train_images`` (6000, 28, 28), ``train_labels``, ``train_index``,
        ``test_images`` (1000, 28, 28), ``test_labels``, ``test_index``;
        the ``*_index`` arrays are the images' positions in the original
        Fashion-MNIST files.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(
            f"sample not found: expected {path}, which the repository ships; rebuild it with "
            f"`python data/make_sample.py` (needs apt-get install dataset-fashion-mnist).")
    data = path.read_bytes()
    verify_bytes(data, path, sha256=SAMPLE_SHA256 if sha256 is None else sha256)
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
