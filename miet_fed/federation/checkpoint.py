"""Per-round checkpoints of a simulation: a killed long run resumes from its last full round.

A run's checkpoint lives next to its results folder, in `<parent>/.<run>.ckpt/`:

    config.toml                  the run's config; a resume needs the same one
    server.json                  the last complete round: the commit point, written last
    server-r<R>.safetensors      global arrays and the strategy's state (FedAdam's moments,
                                 FedAvgM's momentum) after round R
    rows-r<R>.jsonl              every per-device row of rounds 0..R
    devices/<b>/<d>-r<R>.safetensors  device d's personal state after it trained in round R
                                 (the device store, `miet_fed.federation.device_store`)

The server-r<R> file also holds the device registry (each device's newest saved round and its
first contact), so a resume knows which device file to read. Nodes write device states every
round they train; the server commits a round by writing `server.json` after its other files and
only then deletes the device versions that round replaced. A resume deletes files of rounds
after the committed one, so a round cut half-way is redone from scratch; rounds are seeded per
(run, round, device), so the resumed run's tables equal an uninterrupted run's. Plain
safetensors and JSON: nothing is unpickled.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord
from safetensors.numpy import load_file, save_file

from miet_fed.config import SimulateConfig, strip_runtime, to_dict, to_toml
from miet_fed.errors import MietError
from miet_fed.files import atomic_write
from miet_fed.results import claim_run, run_identity

SERVER = "server.json"
CLIENTS = "devices"  # the device store (miet_fed.federation.device_store) lives here


def checkpoint_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.ckpt"


def _signature(cfg: SimulateConfig) -> str:
    # a resume may differ in the `runtime` settings (features are cached per image whatever
    # device or batch computed them; another cluster, other GPUs): the same list as run_identity
    return json.dumps(strip_runtime(SimulateConfig, to_dict(cfg)), sort_keys=True)


def open_checkpoint(out: Path, cfg: SimulateConfig) -> tuple[str, int]:
    """The checkpoint folder for `out` (absolute, '' when off) and the round to resume after.

    A checkpoint of a different config (the same results folder reused with other settings) is
    discarded with a notice: its results would be replaced anyway. A checkpoint that cannot be
    read (an empty `server.json` after a power loss, a truncated state file) is set aside, not
    deleted, with a one-line notice naming it, and the run starts over."""
    if not cfg.run.checkpoint:
        return "", 0
    path = checkpoint_dir(Path(out)).absolute()
    saved = path / "config.json"
    try:
        if path.is_dir() and (not saved.exists() or saved.read_text() != _signature(cfg)):
            print(f"miet-fed: discarding a checkpoint of other settings: {path}", file=sys.stderr)
            shutil.rmtree(path, ignore_errors=True)
        if path.exists() and not path.is_dir():
            problem = "not a folder"
        else:
            problem = _damage(path) if path.exists() else ""
        if problem:
            _set_aside(path, problem)
        path.mkdir(parents=True, exist_ok=True)
        if not saved.exists():
            atomic_write(saved, lambda p: p.write_text(_signature(cfg)))
            (path / "config.toml").write_text(to_toml(cfg))  # for people: what this run was
    except OSError as exc:
        raise MietError(
            f"cannot use the checkpoint folder {path} ({exc.strerror or exc}); make it "
            "writable, or set run.checkpoint=false"
        ) from None
    last = committed_round(path)
    _drop_after(path, last)
    return str(path), last


def _damage(path: Path) -> str:
    """What makes the checkpoint at `path` unusable ('' when it can be resumed): the commit
    point, the committed round's server files and every client state a resume would read
    must parse (safetensors checks each file's length against its header)."""
    from safetensors import SafetensorError, safe_open

    try:
        data = path / "data.json"
        if data.exists() and not isinstance(json.loads(data.read_text()), dict):
            return "data.json is not a JSON object"
        last = committed_round(path)
    except (ValueError, KeyError, TypeError, OSError) as exc:
        return f"{SERVER} or data.json unreadable: {type(exc).__name__}"
    if last == 0:
        return ""
    server = path / f"server-r{last}.safetensors"
    devices = [p for p in (path / CLIENTS).glob("*/*.safetensors") if 0 < _round_of(p) <= last]
    rows = path / f"rows-r{last}.jsonl"
    for file in [rows, server, *devices]:
        try:
            if file == rows:
                for line in rows.read_text().splitlines():
                    if line.strip():
                        json.loads(line)
                continue
            with safe_open(str(file), framework="numpy") as f:  # checks length against header
                meta = f.metadata() or {}
            if file == server:
                json.loads(meta["layout"])
        except (OSError, ValueError, KeyError, SafetensorError) as exc:
            return f"{file.relative_to(path)} unreadable: {type(exc).__name__}"
    return ""


def _set_aside(path: Path, problem: str) -> None:
    """Keep a damaged checkpoint for inspection under a new name; the run starts over."""
    aside = path.with_name(f"{path.name}.damaged-{uuid.uuid4().hex[:6]}")
    os.replace(path, aside)
    print(
        f"miet-fed: the checkpoint {path} is damaged ({problem}); set aside as {aside.name}, "
        "starting over from round 1",
        file=sys.stderr,
    )


@contextmanager
def checkpointed(out: Path, cfg: SimulateConfig) -> Iterator[tuple[str, int]]:
    """`open_checkpoint` for the length of a run: removed once the run succeeded (its results
    are in place); kept after a failure only if it holds a complete round to resume from.

    The run's folder is locked first (a second run on the same folder stops with one line
    instead of touching this run's checkpoint) and checked: it may replace only a miet-fed run
    of the same settings, unless run.overwrite is set."""
    overwrite = bool(getattr(cfg.run, "overwrite", False))
    with claim_run(Path(out), run_identity("simulate", cfg), overwrite):
        path, last = open_checkpoint(out, cfg)
        try:
            yield path, last
        except BaseException:
            if path and _committed_or_none(Path(path)) == 0:
                shutil.rmtree(path, ignore_errors=True)
            raise
        finish(path)


def check_data(path: str, resume_round: int, fingerprint: str) -> int:
    """The round to resume after, given the dataset's content id: 0 (and a fresh checkpoint)
    when the data changed since the checkpoint was written."""
    saved = Path(path) / "data.json"
    try:
        before = json.loads(saved.read_text()).get("fingerprint") if saved.exists() else None
    except (ValueError, AttributeError, OSError):
        before = ""  # unreadable: treat as other data
    if saved.exists() and before != fingerprint:
        print(f"miet-fed: the dataset changed; discarding the checkpoint {path}", file=sys.stderr)
        (Path(path) / SERVER).unlink(missing_ok=True)  # the commit point goes first
        _drop_after(Path(path), 0)
        resume_round = 0
    atomic_write(saved, lambda p: p.write_text(json.dumps({"fingerprint": fingerprint})))
    return resume_round


def committed_round(path: Path) -> int:
    """The last committed round (0: none). Raises ValueError when `server.json` is damaged."""
    server = Path(path) / SERVER
    if not server.exists():
        return 0
    info = json.loads(server.read_text())
    round_ = info.get("round") if isinstance(info, dict) else None
    if type(round_) is not int or round_ < 0:
        raise ValueError(f"{server} holds no round number")
    return round_


def _committed_or_none(path: Path) -> int | None:
    try:
        return committed_round(path)
    except (ValueError, OSError):
        return None


_ROUND = re.compile(r"r(\d+)(?:\.\w+)?$")


def _round_of(p: Path) -> int:
    """r3.safetensors, contact-r3, server-r3.safetensors, rows-r3.jsonl -> 3."""
    m = _ROUND.search(p.name)
    return int(m.group(1)) if m else -1


def _server_files(root: Path) -> list[Path]:
    return [*root.glob("server-r*.safetensors"), *root.glob("rows-r*.jsonl")]


def _drop_after(path: Path, last: int) -> None:
    """Files of rounds after the committed one: a round the killed run did not finish."""
    for p in (path / CLIENTS).glob("*/*.safetensors"):
        if _round_of(p) > last:
            p.unlink(missing_ok=True)
    for p in _server_files(path):
        if _round_of(p) != last:
            p.unlink(missing_ok=True)


def finish(path: str) -> None:
    """The run's results are in place: its checkpoint is no longer needed."""
    if path:
        shutil.rmtree(path, ignore_errors=True)


# --- arrays <-> safetensors -------------------------------------------------------------------


def _flatten(named: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """{name: ArrayRecord | dict | list of arrays} -> flat tensors + layout to rebuild them."""
    tensors: dict[str, np.ndarray] = {}
    layout: dict[str, Any] = {}
    for name, value in named.items():
        if value is None:
            continue
        if isinstance(value, ArrayRecord):
            items, kind = [(k, v.numpy()) for k, v in value.items()], "record"
        elif isinstance(value, dict):
            items, kind = list(value.items()), "dict"
        elif isinstance(value, list):
            items, kind = [(str(i), v) for i, v in enumerate(value)], "list"
        else:
            raise TypeError(f"cannot checkpoint {name} of type {type(value).__name__}")
        layout[name] = {"kind": kind, "keys": [k for k, _ in items]}
        for key, arr in items:
            tensors[f"{name}/{key}"] = np.ascontiguousarray(arr)
    return tensors, layout


def _unflatten(tensors: dict[str, np.ndarray], layout: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, spec in layout.items():
        arrays = [tensors[f"{name}/{k}"] for k in spec["keys"]]
        if spec["kind"] == "record":
            out[name] = ArrayRecord(
                {k: Array(a) for k, a in zip(spec["keys"], arrays, strict=True)}
            )
        elif spec["kind"] == "dict":
            out[name] = dict(zip(spec["keys"], arrays, strict=True))
        else:
            out[name] = arrays
    return out


def _save(path: Path, named: dict[str, Any]) -> None:
    tensors, layout = _flatten(named)
    meta = {"layout": json.dumps(layout)}
    atomic_write(path, lambda p: save_file(tensors, str(p), metadata=meta))


def _load(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        layout = json.loads((f.metadata() or {})["layout"])
    return _unflatten(load_file(str(path)), layout)


# --- server side ------------------------------------------------------------------------------


def save_server(
    path: str,
    server_round: int,
    arrays: ArrayRecord,
    strategy_state: dict[str, Any],
    devices: dict[str, np.ndarray],
    rows: Path,
) -> None:
    """Commit round `server_round`: state files first, then `server.json` (the commit point).
    `devices` is the server's per-device registry (newest saved round, first contact)."""
    root = Path(path)
    named = {"arrays": arrays, "devices": devices, **strategy_state}
    _save(root / f"server-r{server_round}.safetensors", named)
    atomic_write(root / f"rows-r{server_round}.jsonl", lambda p: shutil.copyfile(rows, p))
    info = {"round": server_round}
    atomic_write(root / SERVER, lambda p: p.write_text(json.dumps(info)))
    for p in _server_files(root):  # keep one generation of server files
        if _round_of(p) != server_round:
            p.unlink(missing_ok=True)


def load_server(
    path: str, server_round: int
) -> tuple[ArrayRecord, Path, dict[str, Any], dict[str, np.ndarray]]:
    """Global arrays after `server_round`, the rows file of rounds 0..server_round, the
    strategy's own state and the device registry."""
    root = Path(path)
    state = _load(root / f"server-r{server_round}.safetensors")
    arrays = state.pop("arrays")
    devices = state.pop("devices")
    return arrays, root / f"rows-r{server_round}.jsonl", state, devices
