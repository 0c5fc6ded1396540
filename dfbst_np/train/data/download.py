"""Checked downloads over plain urllib, with mirrors and a progress bar.

The rules that keep a bad file from ever being taken for a good one:

* bytes stream into ``<dest>.part`` in the destination's own folder and
  are hashed on the way; only a file whose checksum matches is moved into
  place, with ``os.replace`` (atomic on one file system);
* a short, corrupt or failed transfer deletes its ``.part`` file; a killed
  process may leave one behind, but nothing reads ``.part`` files and the
  next run overwrites it;
* an existing ``dest`` is re-verified before it is used, and deleted if it
  fails (it is known bad, and keeping it would only invite its use);
* a transfer has an overall deadline besides the per-read timeout (a server
  that trickles a byte a second never ends one otherwise), and redirects are
  followed only to http(s) URLs.
"""
from __future__ import annotations

import http.client
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

from tqdm import tqdm

from ...errors import DataError
from .checksums import ChecksumError, hash_file, new_hash, pick_checksum

PathLike = Union[str, "os.PathLike[str]"]

_CHUNK = 1 << 16
_USER_AGENT = "dfbst_np-data/0.1 (urllib)"


class DownloadError(DataError, OSError):
    """No mirror gave a file with the right checksum.

    Attributes
    ----------
    path : str
        The destination file.
    attempts : list of (url, exception)
        Why each mirror failed, in the order they were tried.
    """

    def __init__(self, path: PathLike, attempts: List[Tuple[str, BaseException]]) -> None:
        self.path = os.fspath(path)
        self.attempts = attempts
        lines = [f"could not download {self.path} from any of {len(attempts)} mirror(s):"]
        lines += [f"  {url}: {type(exc).__name__}: {exc}" for url, exc in attempts]
        super().__init__("\n".join(lines))


class IncompleteDownloadError(DataError, OSError):
    """The server closed the connection before sending the announced length."""


class DownloadTimeoutError(DataError, OSError):
    """A transfer took longer than its overall deadline."""


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http(s) URLs only (urllib alone would also follow ftp://)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        scheme = urllib.parse.urlsplit(newurl).scheme
        if scheme not in ("http", "https"):
            raise urllib.error.URLError(
                f"{req.full_url} redirects to {newurl!r}; only http and https are followed")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpOnlyRedirects)


def part_path(dest: PathLike) -> Path:
    """The temporary file a download of ``dest`` streams into."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".part")


def _check_url(url: str) -> None:
    # urllib would also follow file:// and ftp://; a dataset mirror is
    # always http(s), and anything else in the table is a mistake.
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"refusing non-HTTP(S) URL {url!r}")


def _fetch(url: str, tmp: Path, algorithm: str, timeout: float, progress: bool,
           deadline: float) -> str:
    """Stream ``url`` into ``tmp``; return the hex digest of what arrived."""
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    digest = new_hash(algorithm)
    stop = time.monotonic() + deadline
    with _OPENER.open(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        received = 0
        with open(tmp, "wb") as out, tqdm(total=total, unit="B", unit_scale=True,
                                          unit_divisor=1024, desc=tmp.name[:-5],
                                          disable=not progress, leave=False) as bar:
            # read1: at most one socket read, so the deadline is checked between reads
            # (read(n) would wait for all n bytes, however slowly they come).
            for chunk in iter(lambda: response.read1(_CHUNK), b""):
                if time.monotonic() > stop:
                    raise DownloadTimeoutError(
                        f"{url}: not finished after the {deadline:g} s deadline "
                        f"({received} bytes received); the server is too slow")
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
    # http.client does not raise when a connection drops early: it just ends
    # the stream, so compare with the announced length ourselves.
    if total is not None and received != total:
        raise IncompleteDownloadError(
            f"{tmp}: connection closed after {received} of {total} bytes from {url}")
    return digest.hexdigest()


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def download(urls: Union[str, Sequence[str]], dest: PathLike, *, md5: Optional[str] = None,
             sha256: Optional[str] = None, progress: bool = True, timeout: float = 60.0,
             deadline: float = 3600.0) -> Path:
    """Fetch ``dest`` from the first mirror that gives the right bytes.

    Parameters
    ----------
    urls : str or sequence of str
        Mirror URLs of the same file, tried in order (http or https only).
    dest : path-like
        Where the file goes; its folder is created if needed.
    md5, sha256 : str
        Exactly one: the checksum the file must have.
    progress : bool
        Show a tqdm progress bar on stderr.
    timeout : float
        Seconds each connection and each read may block.
    deadline : float
        Seconds the whole transfer of one file from one mirror may take.

    Returns
    -------
    pathlib.Path
        ``dest``, which now exists and matches the checksum.

    Raises
    ------
    DownloadError
        If no mirror gave a file with the right checksum; its message lists
        each mirror's failure, e.g. the :class:`ChecksumError` naming the file
        with the expected and received checksums. No file is left at
        ``dest`` nor at ``dest.part``.
    """
    algorithm, expected = pick_checksum(md5, sha256)
    urls = [urls] if isinstance(urls, str) else list(urls)
    if not urls:
        raise ValueError(f"no URL given for {dest}")
    for url in urls:
        _check_url(url)
    dest = Path(dest)
    if dest.exists():
        got = hash_file(dest, algorithm)
        if got == expected:
            return dest
        # Known bad: remove it so that nothing can pick it up if every
        # mirror fails below.
        _remove(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = part_path(dest)
    attempts: List[Tuple[str, BaseException]] = []
    for url in urls:
        try:
            got = _fetch(url, tmp, algorithm, timeout, progress, deadline)
            if got != expected:
                raise ChecksumError(dest, algorithm, expected, got, note=f"downloaded from {url}")
        except (urllib.error.URLError, http.client.HTTPException, OSError, ChecksumError) as exc:
            _remove(tmp)
            attempts.append((url, exc))
            continue
        except BaseException:
            _remove(tmp)  # Ctrl-C: leave nothing half-written behind
            raise
        os.replace(tmp, dest)
        return dest
    raise DownloadError(dest, attempts)
