"""Downloads that never end, redirects to other schemes, a damaged CIFAR folder and IDX
sizes past int64 (issue 12); against a local HTTP server on 127.0.0.1, bounded in time."""
import struct
import time

import numpy as np
import pytest

from dfbst_np.cli import main
from dfbst_np.train.data import (CifarFormatError, DownloadError, IdxFormatError, download, load_dataset,
                                 parse_idx)
from dfbst_np.train.data import datasets as ds
from dfbst_np.train.data.sources import RemoteFile, Source

from .test_data import cifar_members, write_cifar_archive
from .test_download import GOOD_MD5, PAYLOAD, _Handler, serve


class _SlowHandler(_Handler):
    """Adds ``trickle`` (one byte every 50 ms, 100 at most) and ``redirect`` (302 to body)."""

    def do_GET(self):  # noqa: N802
        mode, body = self.server.routes.get(self.path, ("missing", b""))
        if mode == "redirect":
            self.send_response(302)
            self.send_header("Location", body.decode())
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if mode == "trickle":
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for i in range(min(len(body), 100)):    # bounded: the test ends even if unfixed
                self.wfile.write(body[i:i + 1])
                self.wfile.flush()
                time.sleep(0.05)
            return
        super().do_GET()


@pytest.fixture
def server():
    with serve(_SlowHandler) as httpd:
        yield httpd


def test_a_trickling_server_hits_the_overall_deadline(server, tmp_path):
    server.routes["/slow.bin"] = ("trickle", PAYLOAD)
    dest = tmp_path / "slow.bin"
    with pytest.raises(DownloadError) as info:
        # Each read gets a byte within the 2 s timeout; only the deadline can stop this.
        download(server.url + "/slow.bin", dest, md5=GOOD_MD5, progress=False, timeout=2,
                 deadline=0.5)
    assert "deadline" in str(info.value) and "slow.bin" in str(info.value)
    assert not dest.exists() and not (tmp_path / "slow.bin.part").exists()


@pytest.mark.parametrize("target", ["ftp://127.0.0.1/f.bin", "file:///etc/passwd"])
def test_redirects_to_other_schemes_are_refused(server, tmp_path, target):
    server.routes["/f.bin"] = ("redirect", target.encode())
    with pytest.raises(DownloadError) as info:
        download(server.url + "/f.bin", tmp_path / "f.bin", md5=GOOD_MD5, progress=False, timeout=5)
    assert target in str(info.value)
    assert not (tmp_path / "f.bin").exists()


def test_http_redirects_are_still_followed(server, tmp_path):
    server.routes["/old.bin"] = ("redirect", (server.url + "/new.bin").encode())
    server.routes["/new.bin"] = ("ok", PAYLOAD)
    download(server.url + "/old.bin", tmp_path / "f.bin", md5=GOOD_MD5, progress=False, timeout=5)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_a_damaged_cifar_folder_says_how_and_download_replaces_it(server, tmp_path, monkeypatch,
                                                                   capsys):
    root = tmp_path / "data"
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    members, _, _ = cifar_members()
    for name, data in members:          # tiny members: not the published CIFAR files
        (root / name).write_bytes(data)
    (folder / "data_batch_3").unlink()
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    digest, expect, _ = write_cifar_archive(tmp_path / "served.tar.gz")
    server.routes["/kriz/cifar-10-python.tar.gz"] = ("ok", (tmp_path / "served.tar.gz").read_bytes())
    monkeypatch.setitem(ds.SOURCES, "cifar10", Source("", (server.url + "/kriz/",),
                                                      (RemoteFile("cifar-10-python.tar.gz", digest),)))
    with pytest.raises(CifarFormatError) as info:
        load_dataset("cifar10", root=root, progress=False)
    msg = str(info.value)
    assert str(folder) in msg and "download=True" in msg and "--download" in msg
    # The command line says the same in one error line (exit 2).
    assert main(["train", "--model", "vgg16", "--data-root", str(root), "--out",
                 str(tmp_path / "o"), "--no-progress"]) == 2
    assert "--download" in capsys.readouterr().err
    d = load_dataset("cifar10", root=root, train=False, download=True, progress=False)
    np.testing.assert_array_equal(d.images, expect["test"][0] / np.float32(255))
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before    # the user's files, as they were
    assert (root / "cifar-10-python.tar.gz").is_file()


def test_idx_sizes_past_int64_are_refused():
    # 2**31 * 2**31 * 4 = 2**64: in int64 the product wraps to 0, which an empty payload "matched".
    header = bytes([0, 0, 0x08, 3]) + struct.pack(">III", 2**31, 2**31, 4)
    with pytest.raises(IdxFormatError, match="huge.idx: truncated"):
        parse_idx(header, "huge.idx")
