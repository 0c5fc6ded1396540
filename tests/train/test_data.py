"""Readers and loaders of dfbst_np.train.data on small files written here in the real formats."""
import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

from dfbst_np.train.data import (ChecksumError, CifarFormatError, DatasetNotFoundError,
                                 IdxFormatError, UnsafeArchiveError, UnsafePickleError,
                                 load_dataset, load_sample_arrays, parse_idx, read_cifar_archive,
                                 read_cifar_folder, read_idx, safe_loads)
from dfbst_np.train.data import datasets as ds
from dfbst_np.train.data import sample
from dfbst_np.train.data.sources import RemoteFile, Source

# -- writers of the real formats (also used by test_download.py) -----------------------------


def idx_bytes(arr: np.ndarray) -> bytes:
    """An IDX file holding ``arr`` (uint8 or int32), as the MNIST files are written."""
    code = {np.dtype("u1"): 0x08, np.dtype("i4"): 0x0C}[arr.dtype]
    header = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def gz(data: bytes, mtime: int = 0) -> bytes:
    return gzip.compress(data, mtime=mtime)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class _Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2 ``str`` opcodes, as CIFAR's cPickle files have."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        data = obj.encode("latin-1") if isinstance(obj, str) else bytes(obj)
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str


def py2_pickle(obj) -> bytes:
    """``obj`` pickled like the CIFAR "python version" batches (Python 2, NumPy 1)."""
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    # Old NumPy named its array rebuilder numpy.core.multiarray; keep that spelling.
    return buf.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def tar_gz(members) -> bytes:
    """A .tar.gz of ``(name, bytes)`` regular-file members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def cifar_members(dataset="cifar10", n=4, seed=0):
    """Members of a tiny CIFAR archive and the (images, labels) each split must give."""
    rng = np.random.default_rng(seed)
    k, base = (10, "cifar-10-batches-py") if dataset == "cifar10" else (100, "cifar-100-python")
    label_key = "labels" if dataset == "cifar10" else "fine_labels"
    train_names = [f"data_batch_{i}" for i in range(1, 6)] if dataset == "cifar10" else ["train"]
    test_names = ["test_batch"] if dataset == "cifar10" else ["test"]
    members, expect = [], {}
    for split, names in (("train", train_names), ("test", test_names)):
        xs, ys = [], []
        for name in names:
            x = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
            y = [int(v) for v in rng.integers(0, k, size=n)]
            batch = {"batch_label": f"{name} of 5", "data": x, label_key: y,
                     "filenames": [f"img_{i}.png" for i in range(n)]}
            if dataset == "cifar100":
                batch["coarse_labels"] = [v // 5 for v in y]
            members.append((f"{base}/{name}", py2_pickle(batch)))
            xs.append(x.reshape(n, 3, 32, 32))
            ys.append(np.array(y, dtype=np.int64))
        expect[split] = (np.concatenate(xs), np.concatenate(ys))
    names = [f"class{i}" for i in range(k)]
    meta = ({"label_names": names, "num_cases_per_batch": n, "num_vis": 3072} if dataset == "cifar10"
            else {"fine_label_names": names, "coarse_label_names": [f"super{i}" for i in range(20)]})
    members.append((f"{base}/{'batches.meta' if dataset == 'cifar10' else 'meta'}", py2_pickle(meta)))
    return members, expect, names


def write_cifar_archive(path: Path, dataset="cifar10"):
    """Write a tiny CIFAR archive; return its md5 and the expected arrays."""
    members, expect, names = cifar_members(dataset)
    data = tar_gz(members)
    path.write_bytes(data)
    return md5(data), expect, names


# -- IDX ----------------------------------------------------------------------------------


def test_idx_reads_gzip_and_plain(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a.gz").write_bytes(gz(idx_bytes(images)))
    (tmp_path / "a").write_bytes(idx_bytes(images))
    for name in ("a.gz", "a"):
        out = read_idx(tmp_path / name, expected_ndim=3)
        assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
        np.testing.assert_array_equal(out, images)
    big_endian = np.array([[1, -2, 70000]], dtype=np.int32)
    out = parse_idx(idx_bytes(big_endian))
    assert out.dtype == np.dtype("i4") and out.dtype.isnative
    np.testing.assert_array_equal(out, big_endian)


@pytest.mark.parametrize("data, message", [
    (b"\x00\x00\x08", "too short"),
    (b"\x00\x01\x08\x01" + struct.pack(">I", 1) + b"\x00", "wrong magic"),
    (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00", "wrong magic"),
    (b"\x00\x00\x08\x03" + struct.pack(">I", 2), "truncated header"),
    (b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"\x00" * 4, "truncated"),
    (b"\x00\x00\x08\x01" + struct.pack(">I", 2) + b"\x00" * 3, "too long"),
])
def test_idx_errors_name_the_file(tmp_path, data, message):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(data)
    with pytest.raises(IdxFormatError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_idx_corrupt_gzip_and_wrong_ndim(tmp_path):
    good = gz(idx_bytes(np.zeros((3,), np.uint8)))
    path = tmp_path / "labels.gz"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(IdxFormatError, match="gzip") as info:
        read_idx(path)
    assert str(path) in str(info.value)
    path.write_bytes(good)
    with pytest.raises(IdxFormatError, match="expected 3"):
        read_idx(path, expected_ndim=3)


# -- the restricted unpickler -----------------------------------------------------------


class _CallsSystem:
    def __reduce__(self):
        return os.system, ("echo pwned",)


class _CallsEval:
    def __reduce__(self):
        return eval, ("1 + 1",)


@pytest.mark.parametrize("blob", [
    b"cos\nsystem\n(S'echo pwned'\ntR.",            # hand-written protocol-0 pickle
    pickle.dumps(_CallsSystem(), protocol=2),
    pickle.dumps(_CallsEval(), protocol=4),
    pickle.dumps({"data": _CallsSystem()}, protocol=4),
])
def test_safe_loads_refuses_code(blob, monkeypatch):
    calls = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a))
    with pytest.raises(UnsafePickleError, match="not allowed"):
        safe_loads(blob, "evil.pkl")
    assert calls == []


def test_safe_loads_rebuilds_numpy_arrays_both_spellings():
    x = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for blob in (py2_pickle({"data": x, "labels": [1, 2, 3]}),       # numpy.core.*
                 pickle.dumps({b"data": x, b"labels": [1, 2, 3]}, protocol=4)):  # numpy._core.*
        out = safe_loads(blob)
        np.testing.assert_array_equal(out[b"data"], x)
        assert out[b"labels"] == [1, 2, 3]


# -- CIFAR ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_cifar_archive_both_splits(tmp_path, dataset):
    path = tmp_path / f"{dataset}.tar.gz"
    digest, expect, names = write_cifar_archive(path, dataset)
    for split in ("train", "test"):
        images, labels, classes = read_cifar_archive(path, dataset, train=split == "train", md5=digest)
        assert images.dtype == np.uint8 and images.shape[1:] == (3, 32, 32)
        assert labels.dtype == np.int64
        np.testing.assert_array_equal(images, expect[split][0])
        np.testing.assert_array_equal(labels, expect[split][1])
        assert classes == names
    assert len(expect["train"][1]) == (20 if dataset == "cifar10" else 4)


def test_cifar_checksum_is_checked_before_any_unpickling(tmp_path, monkeypatch):
    evil = pickle.dumps({"data": _CallsSystem(), "labels": [0]}, protocol=2)
    calls = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a))
    members = [(f"cifar-10-batches-py/{n}", evil) for n in ("test_batch", "batches.meta")]
    path = tmp_path / "cifar-10-python.tar.gz"
    path.write_bytes(tar_gz(members))
    unpickled = []
    monkeypatch.setattr("dfbst_np.train.data.cifar.safe_loads",
                        lambda *a: unpickled.append(a) or safe_loads(*a))
    with pytest.raises(ChecksumError) as info:
        read_cifar_archive(path, "cifar10", train=False, md5="0" * 32)
    assert str(path) in str(info.value) and "0" * 32 in str(info.value)
    assert unpickled == []
    # Even with a matching checksum the pickle cannot run anything.
    with pytest.raises(UnsafePickleError, match="posix.system|os.system|nt.system"):
        read_cifar_archive(path, "cifar10", train=False, md5=md5(path.read_bytes()))
    assert calls == []


@pytest.mark.parametrize("name, kind", [("../escape", tarfile.REGTYPE),
                                        ("/etc/passwd", tarfile.REGTYPE),
                                        ("cifar-10-batches-py/../../x", tarfile.REGTYPE),
                                        ("cifar-10-batches-py/link", tarfile.SYMTYPE),
                                        ("cifar-10-batches-py/hard", tarfile.LNKTYPE)])
def test_cifar_refuses_path_traversal_and_links(tmp_path, name, kind):
    members, _, _ = cifar_members()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for n, data in members:
            info = tarfile.TarInfo(n)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        bad = tarfile.TarInfo(name)
        bad.type = kind
        if kind == tarfile.REGTYPE:
            bad.size = 4
            tar.addfile(bad, io.BytesIO(b"evil"))
        else:
            bad.linkname = "../../etc/passwd"
            tar.addfile(bad)
    path = tmp_path / "sub" / "cifar-10-python.tar.gz"
    path.parent.mkdir()
    path.write_bytes(buf.getvalue())
    with pytest.raises(UnsafeArchiveError, match="refused|escape") as info:
        read_cifar_archive(path, "cifar10", md5=md5(buf.getvalue()))
    assert str(path) in str(info.value)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["cifar-10-python.tar.gz", "sub"]


def test_cifar_missing_member_and_bad_content(tmp_path):
    members, _, _ = cifar_members()
    path = tmp_path / "c.tar.gz"
    data = tar_gz([m for m in members if not m[0].endswith("data_batch_3")])
    path.write_bytes(data)
    with pytest.raises(CifarFormatError, match="data_batch_3 is missing"):
        read_cifar_archive(path, "cifar10", md5=md5(data))
    wrong = py2_pickle({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]})
    data = tar_gz([(n, wrong if n.endswith("test_batch") else b) for n, b in members])
    path.write_bytes(data)
    with pytest.raises(CifarFormatError, match="test_batch.*3072"):
        read_cifar_archive(path, "cifar10", train=False, md5=md5(data))


def test_cifar_extracted_folder_checked_per_file(tmp_path):
    members, expect, names = cifar_members()
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    sums = {}
    for name, data in members:
        (tmp_path / name).write_bytes(data)
        sums[name.split("/")[-1]] = md5(data)
    images, labels, classes = read_cifar_folder(folder, "cifar10", train=True, member_md5=sums)
    np.testing.assert_array_equal(images, expect["train"][0])
    np.testing.assert_array_equal(labels, expect["train"][1])
    (folder / "data_batch_2").write_bytes(members[0][1])
    with pytest.raises(ChecksumError, match="data_batch_2"):
        read_cifar_folder(folder, "cifar10", train=True, member_md5=sums)


# -- load_dataset -----------------------------------------------------------------------------


def _tiny_idx_source(monkeypatch, n=7, seed=0, content_md5=False):
    """Point SOURCES['mnist'] at tiny files; return them as {filename: gz bytes}, arrays."""
    rng = np.random.default_rng(seed)
    arrays = {"train": (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
                        rng.integers(0, 10, n).astype(np.uint8)),
              "t10k": (rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
                       rng.integers(0, 10, 3).astype(np.uint8))}
    files, entries = {}, []
    for prefix, (x, y) in arrays.items():
        for kind, arr in (("images-idx3", x), ("labels-idx1", y)):
            name = f"{prefix}-{kind}-ubyte.gz"
            raw = idx_bytes(arr)
            files[name] = gz(raw)
            entries.append(RemoteFile(name, md5(files[name]), md5(raw) if content_md5 else None))
    monkeypatch.setitem(ds.SOURCES, "mnist", Source("MNIST/raw", ("http://127.0.0.1:9/",), tuple(entries)))
    return files, arrays


def test_load_idx_dataset_from_torchvision_layout(tmp_path, monkeypatch):
    files, arrays = _tiny_idx_source(monkeypatch, content_md5=True)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, data in files.items():
        (raw / name).write_bytes(data)
    d = load_dataset("MNIST", root=tmp_path, train=True)
    x, y = arrays["train"]
    assert d.name == "mnist" and d.train and len(d) == len(y) and d.num_classes == 10
    assert d.images.dtype == np.float32 and d.images.shape == (len(y), 1, 28, 28)
    np.testing.assert_array_equal(d.images[:, 0], x.astype(np.float32) / np.float32(255))
    assert d.labels.dtype == np.int64 and np.array_equal(d.labels, y)
    assert 0.0 <= d.images.min() and d.images.max() <= 1.0
    # A recompressed .gz (other md5) with the original content, and an unpacked file, both pass.
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(gz(idx_bytes(arrays["t10k"][0]), mtime=12345))
    (raw / "t10k-labels-idx1-ubyte.gz").unlink()
    (raw / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(arrays["t10k"][1]))
    d = load_dataset("mnist", root=tmp_path, train=False)
    np.testing.assert_array_equal(d.labels, arrays["t10k"][1])


def test_load_idx_dataset_bad_and_missing_files(tmp_path, monkeypatch):
    files, _ = _tiny_idx_source(monkeypatch)
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", root=tmp_path)
    msg = str(info.value)
    for needle in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                   str(tmp_path / "MNIST" / "raw"), "download=True", "--download"):
        assert needle in msg
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, data in files.items():
        (raw / name).write_bytes(data)
    bad = raw / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(gz(idx_bytes(np.zeros(7, np.uint8))))
    with pytest.raises(ChecksumError) as info:
        load_dataset("mnist", root=tmp_path)
    assert str(bad) in str(info.value) and files[bad.name] != bad.read_bytes()
    assert md5(files[bad.name]) in str(info.value) and md5(bad.read_bytes()) in str(info.value)


def test_fashion_mnist_missing_message_mentions_debian(tmp_path, monkeypatch):
    monkeypatch.setattr(ds, "DEBIAN_FASHION_MNIST", tmp_path / "not-installed")
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion_mnist", root=tmp_path, train=False)


def test_fashion_mnist_falls_back_to_debian_files(tmp_path, monkeypatch):
    # Debian's dataset-fashion-mnist keeps the four files flat in one folder,
    # recompressed (their .gz md5s differ from upstream's, their contents match):
    # built here, small, with the published checksums pointed at them.
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    y = np.array([9, 2, 1, 1, 6], dtype=np.uint8)
    debian = tmp_path / "usr-share-datasets-fashion-mnist"
    debian.mkdir()
    entries = []
    for prefix in ("train", "t10k"):
        for kind, arr in (("images-idx3", x), ("labels-idx1", y)):
            name, raw = f"{prefix}-{kind}-ubyte.gz", idx_bytes(arr)
            entries.append(RemoteFile(name, md5(gz(raw)), md5(raw)))  # as published (mtime 0)
            (debian / name).write_bytes(gz(raw, mtime=1234567))        # as Debian repacked it
    src = ds.SOURCES["fashion_mnist"]
    monkeypatch.setitem(ds.SOURCES, "fashion_mnist", Source(src.folder, src.mirrors, tuple(entries)))
    monkeypatch.setattr(ds, "DEBIAN_FASHION_MNIST", debian)
    root = tmp_path / "root"                                           # holds nothing
    d = load_dataset("fashion_mnist", root=root, train=False)
    assert md5((debian / "t10k-images-idx3-ubyte.gz").read_bytes()) != entries[2].md5
    assert d.images.shape == (5, 1, 28, 28) and d.images.dtype == np.float32
    np.testing.assert_array_equal(d.images[:, 0], x.astype(np.float32) / np.float32(255))
    assert d.labels.dtype == np.int64 and d.labels.tolist() == [9, 2, 1, 1, 6]
    assert d.classes[0] == "T-shirt/top" and d.classes[9] == "Ankle boot"
    assert not root.exists()                                           # nothing copied or written
    # A Debian file whose content is not the published one is refused, by name.
    (debian / "t10k-labels-idx1-ubyte.gz").write_bytes(gz(idx_bytes(y[::-1].copy())))
    with pytest.raises(ChecksumError) as info:
        load_dataset("fashion_mnist", root=root, train=False)
    assert str(debian / "t10k-labels-idx1-ubyte.gz") in str(info.value)


def test_load_cifar_from_root(tmp_path, monkeypatch):
    digest, expect, names = write_cifar_archive(tmp_path / "cifar-10-python.tar.gz")
    src = ds.SOURCES["cifar10"]
    monkeypatch.setitem(ds.SOURCES, "cifar10",
                        Source("", src.mirrors, (RemoteFile("cifar-10-python.tar.gz", digest),)))
    d = load_dataset("cifar-10", root=tmp_path, train=False)
    assert d.images.shape == (4, 3, 32, 32) and d.images.dtype == np.float32
    np.testing.assert_array_equal(d.images, expect["test"][0] / np.float32(255))
    assert d.classes == names and d.name == "cifar10"
    monkeypatch.setitem(ds.SOURCES, "cifar10", src)  # the real md5: the tiny archive fails it
    with pytest.raises(ChecksumError, match="download=True"):
        load_dataset("cifar10", root=tmp_path)


def test_unknown_dataset_and_default_root(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        load_dataset("imagenet")
    monkeypatch.setenv("DFBST_DATA", str(tmp_path))
    assert ds.default_root() == tmp_path
    monkeypatch.delenv("DFBST_DATA")
    assert ds.default_root() == Path.home() / ".cache" / "dfbst_np"


# -- the committed sample -------------------------------------------------------------------


def test_sample_shapes_balance_and_checksum(tmp_path):
    train, test = load_dataset("sample", train=True), load_dataset("sample", train=False)
    assert train.images.shape == (6000, 1, 28, 28) and test.images.shape == (1000, 1, 28, 28)
    assert train.images.dtype == np.float32 and train.labels.dtype == np.int64
    assert np.bincount(train.labels).tolist() == [600] * 10
    assert np.bincount(test.labels).tolist() == [100] * 10
    assert 0.0 <= train.images.min() and train.images.max() <= 1.0
    arrays = load_sample_arrays()
    for split in ("train", "test"):
        idx = arrays[f"{split}_index"]
        assert np.all(np.diff(idx.astype(np.int64)) > 0)  # distinct, original order
    tampered = tmp_path / "sample.npz"
    data = bytearray(sample.SAMPLE_PATH.read_bytes())
    data[len(data) // 2] ^= 1
    tampered.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=sample.SAMPLE_SHA256):
        load_sample_arrays(tampered)
