"""The IDX container format (MNIST and its relatives), gzip-compressed or not."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from miet_fed.errors import MietError

_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Parse an IDX file (the MNIST container format), gzip-compressed or not."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise MietError(
                f"{path} is a corrupt gzip file ({e}); re-download or reinstall it"
            ) from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise MietError(
            f"{path} is not an IDX file (bad magic number); re-download or reinstall it"
        )
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise MietError(f"{path} is truncated (IDX header incomplete); re-download or reinstall it")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    count = int(np.prod(shape, dtype=np.int64))
    if len(raw) != header + count * dtype.itemsize:
        raise MietError(
            f"{path} has {len(raw) - header} data bytes but its header {shape} needs "
            f"{count * dtype.itemsize}; re-download or reinstall it"
        )
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))
