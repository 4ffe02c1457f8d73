"""Where weights and feature caches live: outside git, shared by all runs of a user."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$MIET_FED_CACHE`, else `$XDG_CACHE_HOME/miet_fed`, else `~/.cache/miet_fed`."""
    env = os.environ.get("MIET_FED_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "miet_fed"
