"""download() and load_dataset(download=True) against a local HTTP server on 127.0.0.1."""
import contextlib
import hashlib
import http.server
import socket
import threading

import numpy as np
import pytest

from dfbst_np.train.data import (ChecksumError, DownloadError, IncompleteDownloadError, download,
                                 load_dataset, part_path)
from dfbst_np.train.data import datasets as ds
from dfbst_np.train.data.sources import RemoteFile, Source

from .test_data import _tiny_idx_source, write_cifar_archive

PAYLOAD = bytes(range(256)) * 300          # 76,800 bytes: several read chunks
GOOD_MD5 = hashlib.md5(PAYLOAD).hexdigest()
GOOD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.routes[path] = (mode, body)``; every request is counted."""

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.server.hits.append(self.path)
        mode, body = self.server.routes.get(self.path, ("missing", b""))
        if mode == "missing":
            self.send_error(404)
            return
        self.send_response(200)
        if mode != "no-length":
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "cut":      # announce the full length, send half, hang up
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):  # keep test output quiet
        pass


@contextlib.contextmanager
def serve(handler):
    """A threaded HTTP server on 127.0.0.1 with ``routes``, ``hits`` and ``url``."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.routes, httpd.hits = {}, []
    httpd.daemon_threads = True
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def server():
    with serve(_Handler) as httpd:
        yield httpd


@pytest.fixture
def refused_url():
    """A URL on a 127.0.0.1 port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/file.bin"


def _get(urls, dest, **kw):
    return download(urls, dest, progress=False, timeout=5, **kw)


def test_good_file_is_accepted(server, tmp_path):
    server.routes["/f.bin"] = ("ok", PAYLOAD)
    dest = tmp_path / "sub" / "f.bin"
    assert _get(server.url + "/f.bin", dest, md5=GOOD_MD5) == dest
    assert dest.read_bytes() == PAYLOAD and not part_path(dest).exists()
    dest2 = tmp_path / "g.bin"
    download([server.url + "/f.bin"], dest2, sha256=GOOD_SHA256, progress=True, timeout=5)
    assert dest2.read_bytes() == PAYLOAD


@pytest.mark.parametrize("mode, body, cause", [
    ("ok", PAYLOAD[:-1] + b"\x00", ChecksumError),     # corrupted
    ("no-length", PAYLOAD[:1000], ChecksumError),      # truncated, length unannounced
    ("cut", PAYLOAD, IncompleteDownloadError),         # server hangs up mid-stream
], ids=["corrupted", "truncated", "closed-mid-stream"])
def test_bad_transfer_is_rejected_and_leaves_nothing(server, tmp_path, mode, body, cause):
    server.routes["/f.bin"] = (mode, body)
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError) as info:
        _get(server.url + "/f.bin", dest, md5=GOOD_MD5)
    (url, exc), = info.value.attempts
    assert isinstance(exc, cause) and url == server.url + "/f.bin"
    msg = str(info.value)
    assert str(dest) in msg
    if cause is ChecksumError:
        got = hashlib.md5(body).hexdigest()
        assert exc.expected == GOOD_MD5 and exc.got == got
        assert f"expected {GOOD_MD5}, got {got}" in msg
    assert list(tmp_path.iterdir()) == []           # neither f.bin nor f.bin.part
    # A later call with a good server accepts only good bytes.
    server.routes["/f.bin"] = ("ok", PAYLOAD)
    _get(server.url + "/f.bin", dest, md5=GOOD_MD5)
    assert dest.read_bytes() == PAYLOAD


@pytest.mark.parametrize("first", ["404", "refused"])
def test_failing_first_mirror_falls_through(server, tmp_path, refused_url, first):
    server.routes["/good/f.bin"] = ("ok", PAYLOAD)
    bad = server.url + "/gone/f.bin" if first == "404" else refused_url
    dest = tmp_path / "f.bin"
    _get([bad, server.url + "/good/f.bin"], dest, md5=GOOD_MD5)
    assert dest.read_bytes() == PAYLOAD
    assert server.hits == (["/gone/f.bin", "/good/f.bin"] if first == "404" else ["/good/f.bin"])


def test_all_mirrors_failing_lists_each(server, tmp_path, refused_url):
    server.routes["/a/f.bin"] = ("ok", b"wrong")
    with pytest.raises(DownloadError) as info:
        _get([server.url + "/a/f.bin", refused_url, server.url + "/b/f.bin"],
             tmp_path / "f.bin", md5=GOOD_MD5)
    assert len(info.value.attempts) == 3
    for url in (server.url + "/a/f.bin", refused_url, server.url + "/b/f.bin"):
        assert url in str(info.value)
    assert "404" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_stale_part_file_is_ignored_and_overwritten(server, tmp_path):
    server.routes["/f.bin"] = ("ok", PAYLOAD)
    dest = tmp_path / "f.bin"
    part_path(dest).write_bytes(PAYLOAD[:100] + b"junk from a killed run")
    _get(server.url + "/f.bin", dest, md5=GOOD_MD5)
    assert dest.read_bytes() == PAYLOAD and not part_path(dest).exists()


def test_existing_file_is_reverified(server, tmp_path):
    server.routes["/f.bin"] = ("ok", PAYLOAD)
    dest = tmp_path / "f.bin"
    dest.write_bytes(PAYLOAD)
    _get(server.url + "/f.bin", dest, md5=GOOD_MD5)
    assert server.hits == []                        # good copy: no network
    dest.write_bytes(PAYLOAD[:-10])
    _get(server.url + "/f.bin", dest, md5=GOOD_MD5)
    assert server.hits == ["/f.bin"] and dest.read_bytes() == PAYLOAD
    dest.write_bytes(b"bad")
    server.routes.clear()
    with pytest.raises(DownloadError):
        _get(server.url + "/f.bin", dest, md5=GOOD_MD5)
    assert not dest.exists()                        # a known-bad file is not left in place


def test_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        download("http://127.0.0.1/x", tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="32 hex"):
        download("http://127.0.0.1/x", tmp_path / "x", md5="abc", progress=False)
    with pytest.raises(ValueError, match="non-HTTP"):
        download("file:///etc/passwd", tmp_path / "x", md5=GOOD_MD5, progress=False)


def test_load_dataset_downloads_idx_files(server, tmp_path, monkeypatch):
    files, arrays = _tiny_idx_source(monkeypatch)
    for name, data in files.items():
        server.routes[f"/mnist/{name}"] = ("ok", data)
    src = ds.SOURCES["mnist"]
    mirrors = (server.url + "/down/", server.url + "/mnist/")   # the first one 404s
    monkeypatch.setitem(ds.SOURCES, "mnist", Source(src.folder, mirrors, src.files))
    d = load_dataset("mnist", root=tmp_path, train=True, download=True, progress=False)
    np.testing.assert_array_equal(d.labels, arrays["train"][1])
    raw = tmp_path / "MNIST" / "raw"
    names = sorted(p.name for p in raw.iterdir())
    assert names == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    # A corrupted file in the cache is replaced when download=True.
    (raw / "train-labels-idx1-ubyte.gz").write_bytes(b"garbage")
    d = load_dataset("mnist", root=tmp_path, train=True, download=True, progress=False)
    np.testing.assert_array_equal(d.labels, arrays["train"][1])


def test_load_dataset_downloads_cifar_archive(server, tmp_path, monkeypatch):
    digest, expect, _ = write_cifar_archive(tmp_path / "served.tar.gz")
    server.routes["/kriz/cifar-10-python.tar.gz"] = ("ok", (tmp_path / "served.tar.gz").read_bytes())
    monkeypatch.setitem(ds.SOURCES, "cifar10", Source("", (server.url + "/kriz/",),
                                                      (RemoteFile("cifar-10-python.tar.gz", digest),)))
    root = tmp_path / "root"
    d = load_dataset("cifar10", root=root, train=True, download=True, progress=False)
    np.testing.assert_array_equal(d.labels, expect["train"][1])
    assert (root / "cifar-10-python.tar.gz").is_file()
