"""Run folders that never eat user files: written atomically, replaced only when provably ours,
and written by one run at a time.

A run's files go to a hidden temporary sibling of the final folder, which is renamed into place
only when the run succeeded; a failed or interrupted run removes its temporary folder. Every
folder miet-fed writes carries a marker, `.miet-fed-run.json`, with the kind of output, the run's
identity (a digest of every setting that changes its results) and the names it wrote. A run
replaces an existing folder only when that marker says it is a miet-fed run of the same settings
(or `--overwrite` is given) and the folder holds nothing else: a folder that merely contains a
`summary.json` is not proof. A lock file next to the folder keeps two runs from writing it at
once (the second stops with one line instead of deleting the first's temporary folder).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from miet_fed.errors import MietError
from miet_fed.files import write_text

RESULTS_ROOT = Path("results")
#: The machine's, not the run's: a full disk or quota, a read-only or forbidden folder.
_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
MARKER = ".miet-fed-run.json"


def slug(*parts: Any) -> str:
    text = "-".join(str(p) for p in parts if p not in ("", None))
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text)


def run_path(out: str, default_name: str) -> Path:
    """The run's folder: `out` if given, else results/<default_name>; a path the OS cannot
    hold (a NUL byte, a name longer than the filesystem allows) is an error now, not after
    the run."""
    path = Path(out).expanduser() if out else RESULTS_ROOT / default_name
    if "\x00" in str(path):
        raise MietError(f"--out {out!r} contains a NUL byte; choose another folder name")
    for part in path.parts:
        if len(os.fsencode(part)) > 255:
            raise MietError(
                f"--out has a name of {len(os.fsencode(part))} bytes ({part[:20]}...); "
                "folder names are limited to 255 bytes"
            )
    return path


def digest(data: Any) -> str:
    """16 hex digits of the SHA-256 of `data` as sorted JSON: the identity of a run's settings."""
    blob = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_identity(command: str, cfg: Any) -> str:
    """Digest of the command and every setting that changes its results: two runs with the
    same identity compute the same thing, so one may replace (or resume) the other."""
    from miet_fed.config import strip_runtime, to_dict

    # settings marked `runtime` (where a run is written, progress bars, devices...) do not count
    return digest({"command": command, "config": strip_runtime(type(cfg), to_dict(cfg))})


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The folder's miet-fed marker, or None when it has none (or an unreadable one)."""
    try:
        data = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("tool") == "miet-fed" else None


def _write_marker(folder: Path, kind: str, identity: str = "") -> None:
    names = sorted(p.name for p in folder.iterdir() if p.name != MARKER)
    info = {"tool": "miet-fed", "kind": kind, "identity": identity, "files": names}
    write_text(folder / MARKER, json.dumps(info, indent=1) + "\n")


def _foreign(folder: Path, marker: dict[str, Any]) -> list[str]:
    """Entries of `folder` its marker does not list (nested miet-fed outputs such as a
    report/ folder count as ours)."""
    listed = set(marker.get("files") or []) | {MARKER}
    return sorted(
        p.name
        for p in folder.iterdir()
        if p.name not in listed and not (p.is_dir() and read_marker(p) is not None)
    )


def check_replaceable(final: Path, identity: str = "", overwrite: bool = False) -> None:
    """A run replaces only a folder it can prove it wrote: `--out ~` must not delete a home
    directory, nor `--out thesis/` a thesis that happens to sit next to a summary.json."""
    final = Path(final)
    if final.is_symlink() or (final.exists() and not final.is_dir()):
        raise MietError(f"{final} is a file or link, not a results folder; choose another --out")
    if not final.is_dir() or not any(final.iterdir()):
        return
    marker = read_marker(final)
    if marker is None:
        raise MietError(
            f"{final} exists and is not a miet-fed run folder (no {MARKER}); "
            "choose another --out or move its files away first"
        )
    foreign = _foreign(final, marker)
    if foreign:
        raise MietError(
            f"{final} holds files miet-fed did not write ({', '.join(foreign[:3])}); move them "
            "out of the folder or choose another --out"
        )
    if identity and marker.get("identity") != identity and not overwrite:
        raise MietError(
            f"{final} holds a miet-fed {marker.get('kind', 'run')} with other settings; pass "
            "--overwrite to replace it, or choose another --out"
        )


# --- one writer per folder ---------------------------------------------------------------


@dataclass
class _Held:
    fd: int
    thread: int
    depth: int = 1
    identity: str = ""
    overwrite: bool = False


_HELD: dict[str, _Held] = {}
_HELD_LOCK = threading.Lock()


def lock_path(final: Path) -> Path:
    return Path(final).parent / f".{Path(final).name}.lock"


def _busy(final: Path, lock: Path) -> MietError:
    try:
        owner = lock.read_text().strip()
    except OSError:
        owner = ""
    who = f" (pid {owner})" if owner.isdigit() else ""
    return MietError(
        f"{final} is being written by another miet-fed run{who}; wait for it to finish or "
        f"choose another --out (lock: {lock})"
    )


def _acquire(final: Path, lock: Path) -> int:
    """flock on a lock file next to the folder. The file is removed on release, so after
    locking, check it is still the file at that path (else a releaser unlinked it: retry)."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MietError(f"cannot create {final.parent}: {exc.strerror or exc}") from None
    for _ in range(100):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise MietError(
                f"cannot write in {final.parent} ({exc.strerror or exc}); choose a writable --out"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise _busy(final, lock) from None
            raise MietError(f"cannot lock {lock}: {exc.strerror or exc}") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            try:  # who holds it, for the other run's message; a full disk may refuse
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
            except OSError:
                pass
            return fd
        os.close(fd)
    raise MietError(f"cannot lock {lock}: it keeps changing; try again")


@contextmanager
def run_lock(final: Path, identity: str = "", overwrite: bool = False) -> Iterator[None]:
    """Hold `final`'s lock for the block (re-entrant within a thread: the checkpoint and the
    results folder of one run share it). `identity`/`overwrite` are remembered for
    `atomic_dir` calls inside the block that do not pass their own."""
    final = Path(final)
    lock = lock_path(final)
    key = str(lock.absolute())
    me = threading.get_ident()
    with _HELD_LOCK:
        held = _HELD.get(key)
        if held is not None and held.thread != me:
            raise _busy(final, lock)
        if held is not None:
            held.depth += 1
    if held is None:
        fd = _acquire(final, lock)
        held = _Held(fd, me, 1, identity, overwrite)
        with _HELD_LOCK:
            _HELD[key] = held
    else:
        held.identity = held.identity or identity
        held.overwrite = held.overwrite or overwrite
    try:
        yield
    finally:
        with _HELD_LOCK:
            held.depth -= 1
            last = held.depth == 0
            if last:
                _HELD.pop(key, None)
        if last:
            lock.unlink(missing_ok=True)  # while still locked: see _acquire
            os.close(held.fd)


@contextmanager
def claim_run(final: Path, identity: str, overwrite: bool = False) -> Iterator[None]:
    """Lock `final` and check, before any work, that this run may replace what is there."""
    with run_lock(final, identity, overwrite):
        check_replaceable(final, identity, overwrite)
        yield


def _claim(final: Path) -> _Held | None:
    with _HELD_LOCK:
        held = _HELD.get(str(lock_path(final).absolute()))
    return held if held is not None and held.thread == threading.get_ident() else None


@contextmanager
def atomic_dir(
    final: Path, identity: str = "", overwrite: bool = False, kind: str = "run"
) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces `final` (an older run of the same
    settings there is removed) and carries the marker that proves it is ours."""
    final = Path(final)
    with run_lock(final, identity, overwrite):
        held = _claim(final)
        identity = identity or (held.identity if held else "")
        overwrite = overwrite or bool(held and held.overwrite)
        check_replaceable(final, identity, overwrite)
        # A run killed hard (SIGKILL, power loss) cannot clean up; we hold the lock, so any
        # temporary folder left here belongs to a dead run.
        for stale in final.parent.glob(f".{final.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            tmp.mkdir()
        except OSError as exc:
            raise MietError(
                f"cannot write in {final.parent} ({exc.strerror or exc}); choose a writable --out"
            ) from None
        try:
            yield tmp
            _write_marker(tmp, kind, identity)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if exc.errno not in _DISK_ERRORS:
                raise
            raise MietError(
                f"cannot write the results in {final.parent} ({exc.strerror}); free space or "
                "choose a writable --out (nothing was written)"
            ) from None
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


def own_folder(out: Path, kind: str) -> Path:
    """A folder a `sweep` or `report` writes into bit by bit: created with a marker, or reused
    only when its marker says it is such an output; never a folder of the user's, never `..`."""
    out = Path(out)
    if out.name in ("", ".", "..") or out.absolute() == RESULTS_ROOT.absolute():
        raise MietError(f"'{out}' does not name a folder of its own; choose a plain folder name")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise MietError(f"{out} is a file or link, not a {kind} folder; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        marker = read_marker(out)
        if marker is None and _legacy(out, kind):
            _write_marker(out, kind)
            return out
        if marker is None or marker.get("kind") != kind:
            what = f"a miet-fed {marker.get('kind')} folder" if marker else "not a miet-fed folder"
            raise MietError(
                f"{out} exists and is {what} (no {kind} marker {MARKER}); choose another --out "
                "or move its files away first"
            )
        return out
    try:
        out.mkdir(parents=True, exist_ok=True)
        if read_marker(out) is None:
            _write_marker(out, kind)
    except OSError as exc:
        raise MietError(
            f"cannot write {out} ({exc.strerror or exc}); choose a writable --out"
        ) from None
    return out


SWEEP_NAMES = {"runs", "runs.csv", "summary.csv", "sweep.json", "report"}


def _legacy(out: Path, kind: str) -> bool:
    """Folders written before markers existed, recognised by content no user folder has: a
    sweep folder holds only a sweep's names and its runs/ only run folders; a report folder
    a report.md that says so."""
    try:
        if kind == "sweep":
            names = {p.name for p in out.iterdir() if not p.name.startswith(".")}
            runs = [p for p in (out / "runs").glob("*") if not p.name.startswith(".")]
            return (
                names <= SWEEP_NAMES
                and "runs" in names
                and all((p / "summary.json").is_file() for p in runs)
            )
        if kind == "report":
            return (out / "report.md").read_text().startswith("# Report")
    except (OSError, ValueError, TypeError):
        return False
    return False


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
        "token_pool": m.token_pool,
        "proj_rank": m.proj_rank,
        "edge": cfg.edge.name,
        "seed": cfg.run.seed,
    }
