"""Run directories written atomically: a run either leaves a complete folder or nothing.

Files go to a hidden temporary sibling of the final folder, which is renamed into place only when
the run succeeded; a failed or interrupted run removes its temporary folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from miet_fed.errors import MietError

RESULTS_ROOT = Path("results")


def slug(*parts: Any) -> str:
    text = "-".join(str(p) for p in parts if p not in ("", None))
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text)


def run_path(out: str, default_name: str) -> Path:
    return Path(out).expanduser() if out else RESULTS_ROOT / default_name


RUN_MARKER = "summary.json"  # every complete run folder (tune, simulate) has one


def check_replaceable(final: Path) -> None:
    """A run replaces an older run in its folder, never anything else: `--out ~` must not
    delete a home directory."""
    if final.is_file() or final.is_symlink():
        raise MietError(f"{final} is a file, not a results folder; choose another --out")
    if final.is_dir() and any(final.iterdir()) and not (final / RUN_MARKER).is_file():
        raise MietError(
            f"{final} exists and is not a miet-fed run folder (no {RUN_MARKER}); "
            "choose another --out or empty it first"
        )


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces `final` (an older run there is removed)."""
    final = Path(final)
    check_replaceable(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    # A run killed hard (SIGKILL, power loss) cannot clean up: drop its leftovers first.
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=float) + "\n")


def setting_fields(cfg: Any) -> dict[str, Any]:
    """The model and edge settings every run summary starts with (tune and simulate alike)."""
    m = cfg.model
    return {
        "model": m.name,
        "weights": m.weights,
        "img_size": m.img_size,
        "gather": m.gather,
        "k": m.k,
        "dtype": m.dtype,
        "edge": cfg.edge.name,
        "seed": cfg.run.seed,
    }
