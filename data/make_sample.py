"""Build data/fashion_mnist_sample.npz, the small dataset committed with the repo.

A class-balanced, seeded subset of Fashion-MNIST taken from the files of
Debian's ``dataset-fashion-mnist`` (/usr/share/datasets/fashion-mnist/),
which are first checked against the published md5s of the decompressed
IDX files. Run from anywhere::

    python data/make_sample.py            # writes data/fashion_mnist_sample.npz
    python data/make_sample.py --check    # rebuilds in memory, compares, writes nothing

The .npz is written with fixed zip timestamps so the same inputs give the
same bytes (np.savez_compressed stamps the current time into the zip, which
would change the sha256 on every run). It holds uint8 arrays:
train_images (6000, 28, 28), train_labels (6000,), train_index (6000,),
test_images (1000, 28, 28), test_labels (1000,), test_index (1000,);
``*_index`` are the images' positions in the original files, ascending.
"""
from __future__ import annotations

import argparse
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run as a script from a checkout

from dfbst_np.train.data.checksums import hash_bytes  # noqa: E402
from dfbst_np.train.data.datasets import DEBIAN_FASHION_MNIST, verified_idx_bytes  # noqa: E402
from dfbst_np.train.data.idx import parse_idx  # noqa: E402
from dfbst_np.train.data.sources import SOURCES  # noqa: E402

SEED = 20240601
PER_CLASS = {"train": 600, "test": 100}
OUT = HERE / "fashion_mnist_sample.npz"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def read_split(folder: Path, prefix: str):
    """Verified uint8 images (N, 28, 28) and labels (N,) of one split."""
    src = SOURCES["fashion_mnist"]
    out = []
    for kind, ndim in (("images-idx3", 3), ("labels-idx1", 1)):
        rf = src.file(f"{prefix}-{kind}-ubyte.gz")
        data = verified_idx_bytes(folder, rf)  # raises ChecksumError if not the original content
        if data is None:
            sys.exit(f"{folder / rf.filename} not found: apt-get install dataset-fashion-mnist")
        out.append(parse_idx(data, str(folder / rf.filename), ndim))
    return out


def balanced_subset(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Ascending indices of ``per_class`` images of each class, drawn without replacement."""
    picks = [rng.choice(np.flatnonzero(labels == c), size=per_class, replace=False)
             for c in range(10)]
    return np.sort(np.concatenate(picks))


def npz_bytes(arrays: dict) -> bytes:
    """The bytes of a compressed .npz of ``arrays``, identical on every run."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for key in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue(), compresslevel=9)
    return buf.getvalue()


def build(folder: Path = DEBIAN_FASHION_MNIST) -> bytes:
    rng = np.random.default_rng(SEED)
    arrays = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = read_split(folder, prefix)
        idx = balanced_subset(labels, PER_CLASS[split], rng)
        arrays[f"{split}_images"] = images[idx]
        arrays[f"{split}_labels"] = labels[idx].astype(np.uint8)
        arrays[f"{split}_index"] = idx.astype(np.uint16)  # < 60000 fits
    return npz_bytes(arrays)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=DEBIAN_FASHION_MNIST,
                        help="folder with the four Fashion-MNIST IDX files")
    parser.add_argument("--check", action="store_true",
                        help="compare with the committed file instead of writing")
    args = parser.parse_args()
    data = build(args.source)
    digest = hash_bytes(data, "sha256")
    if args.check:
        same = OUT.is_file() and OUT.read_bytes() == data
        print(f"rebuilt sha256 {digest}: {'identical to' if same else 'DIFFERS from'} {OUT}")
        sys.exit(0 if same else 1)
    OUT.write_bytes(data)
    print(f"wrote {OUT} ({len(data)} bytes), sha256 {digest}")


if __name__ == "__main__":
    main()
