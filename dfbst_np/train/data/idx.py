"""Reader for the IDX format of MNIST, Fashion-MNIST and KMNIST.

An IDX file is a 4-byte magic number ``00 00 TT NN`` (TT the element type,
NN the number of dimensions), then NN big-endian uint32 sizes, then the
elements in C order, big-endian. The files are usually gzipped; a gzip
stream is recognised by its own magic bytes, not by the file name.
"""
from __future__ import annotations

import gzip
import math
import os
import zlib
from typing import Optional, Union

import numpy as np

from ...errors import DataError
PathLike = Union[str, "os.PathLike[str]"]

# IDX element type code -> big-endian NumPy dtype.
IDX_TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


class IdxFormatError(DataError, ValueError):
    """An IDX file is malformed: wrong magic, short, too long, bad gzip."""


def decompress_if_gzip(data: bytes, name: str) -> bytes:
    """Return ``data`` gunzipped if it is a gzip stream, else unchanged.

    Raises
    ------
    IdxFormatError
        Naming ``name`` if the gzip stream is corrupt or truncated.
    """
    if not data.startswith(_GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise IdxFormatError(f"{name}: corrupt or truncated gzip stream ({exc})") from exc


def parse_idx(data: bytes, name: str = "<bytes>", expected_ndim: Optional[int] = None) -> np.ndarray:
    """Parse the bytes of one IDX file (gzipped or plain).

    Parameters
    ----------
    data : bytes
        The file's content.
    name : str
        How errors name the file.
    expected_ndim : int, optional
        If given, the number of dimensions the header must declare
        (3 for image files, 1 for label files).

    Returns
    -------
    numpy.ndarray
        Array of the declared shape, in native byte order (uint8 for the
        MNIST family); it owns its memory.

    Raises
    ------
    IdxFormatError
        Naming the file, for a wrong magic number, an unknown element type,
        an unexpected number of dimensions, or a payload shorter or longer
        than the header declares.
    """
    data = decompress_if_gzip(data, name)
    if len(data) < 4:
        raise IdxFormatError(f"{name}: too short for an IDX header ({len(data)} bytes; need at least 4)")
    zero, type_code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or type_code not in IDX_TYPES or ndim == 0:
        raise IdxFormatError(
            f"{name}: wrong magic number 0x{data[:4].hex()}: expected 0x0000TTNN with "
            f"TT one of {sorted(hex(t) for t in IDX_TYPES)} and NN >= 1 dimensions")
    if expected_ndim is not None and ndim != expected_ndim:
        raise IdxFormatError(f"{name}: header declares {ndim} dimensions, expected {expected_ndim}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxFormatError(f"{name}: truncated header: {len(data)} bytes, need {header} for {ndim} dims")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = IDX_TYPES[type_code]
    # Python ints: a hostile header's sizes must not wrap around in int64.
    want = math.prod(shape) * dtype.itemsize
    got = len(data) - header
    if got != want:
        kind = "truncated" if got < want else "too long"
        raise IdxFormatError(
            f"{name}: {kind}: header declares shape {shape} of {dtype.name} "
            f"({want} data bytes), file has {got}")
    arr = np.frombuffer(data, dtype=dtype, count=want // dtype.itemsize, offset=header)
    return arr.reshape(shape).astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: PathLike, expected_ndim: Optional[int] = None) -> np.ndarray:
    """Read an IDX file, gzipped or plain; see :func:`parse_idx`.

    This does not check the file against any checksum; the dataset loader
    reads the bytes once, verifies them, then calls :func:`parse_idx`.
    """
    with open(path, "rb") as f:
        data = f.read()
    return parse_idx(data, os.fspath(path), expected_ndim)
