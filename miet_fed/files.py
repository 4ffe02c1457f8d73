"""Atomic file writes and file checksums, in one place.

Every file miet_fed writes that a reader or a later run may open (results tables, checkpoints,
device state, cache shards and keys, extracted weights and their digests, folder markers) is
written to a hidden temporary name in the same folder and renamed over the final name: a reader
never sees half a file, and a crash or interrupt leaves the old file (or none), never a torn one.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any


def temp_path(path: Path) -> Path:
    """A hidden, unique name beside `path` (same folder, so the rename is atomic)."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """`write(tmp)` fills a temporary file, which then replaces `path` in one rename; the
    temporary file is removed whatever happens."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    """`path.write_text(text)`, atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(text))


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
