"""A strict reader for IDX files, the format of MNIST and Fashion-MNIST.

Layout: two zero bytes, a type code, the number of dimensions ``n``, then ``n``
big-endian uint32 sizes, then the values, big-endian, row-major. Files may be gzipped
(detected by content, not by name). Every check failure names the file, because a
truncated download is the usual cause and the fix is to fetch that file again.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from sat_toolkit.errors import SatError

#: IDX type code -> big-endian numpy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


class IdxFormatError(SatError):
    """An IDX file is missing, truncated or not an IDX file at all."""


def read_idx_bytes(raw: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse the (already decompressed) bytes of one IDX file into a native-endian array."""
    if len(raw) < 4:
        raise IdxFormatError(f"{source}: not an IDX file (only {len(raw)} bytes)")
    zero, type_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0:
        raise IdxFormatError(f"{source}: not an IDX file (magic number {raw[:4].hex()} should start 0000)")
    if type_code not in IDX_DTYPES:
        raise IdxFormatError(f"{source}: unknown IDX type code 0x{type_code:02x} (magic {raw[:4].hex()})")
    if ndim == 0:
        raise IdxFormatError(f"{source}: IDX header declares 0 dimensions")
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise IdxFormatError(f"{source}: truncated IDX header ({len(raw)} of {header_size} bytes)")
    shape = struct.unpack(f">{ndim}I", raw[4:header_size])
    dtype = IDX_DTYPES[type_code]
    expected = header_size + math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "has trailing bytes"
        raise IdxFormatError(
            f"{source}: {what}: header says shape {shape} ({expected} bytes in all), file has {len(raw)}; "
            "download it again"
        )
    values = np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape)
    return values.astype(dtype.newbyteorder("="), copy=True)  # native order, writable, owns memory


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file, gzipped or raw; any problem is an :class:`IdxFormatError` naming it."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise IdxFormatError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise IdxFormatError(
                f"{path}: corrupt or truncated gzip data ({exc}); download it again"
            ) from None
    return read_idx_bytes(raw, source=str(path))
