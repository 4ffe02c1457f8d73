"""Finished runs as pandas frames: `load_run`, `load_runs`, `Run`, `Runs` (the API's half that
reads; `miet_fed.api` runs jobs).

A run folder holds per-round CSVs that say nothing about the run they belong to; a cost table
across runs used to need a glob and a join on `summary.json`, and pivoting on (strategy,
num_clients) silently added two seeds together. Here every frame row carries the run's
identifying settings (and, across several runs, every config key that differs between them),
added at load time from `summary.json` and `config.toml`, so any saved run loads, old or new.

    runs = miet_fed.load_runs("results/sweep_clients")
    runs.comm_cost()                       # bytes by direction and kind, one row per run
    runs.ledger.groupby(["strategy", "num_clients", "seed", "kind"])["bytes"].sum()

Only pandas is imported here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from miet_fed.errors import MietError
from miet_fed.jobs import JOBS

#: Identifying settings put on every row: column (a summary.json key) -> config.toml key,
#: read where the summary is silent (tune runs have no strategy: those stay empty).
ID_COLUMNS: dict[str, str] = {
    "command": "",
    "dataset": "data.dataset",
    "model": "model.name",
    "img_size": "model.img_size",
    "gather": "model.gather",
    "k": "model.k",
    "dtype": "model.dtype",
    "edge": "edge.name",
    "strategy": "fed.strategy",
    "num_clients": "fed.num_clients",
    "clients_per_round": "fed.clients_per_round",
    "rounds": "fed.rounds",
    "partition": "fed.partition",
    "alpha": "fed.alpha",
    "seed": "run.seed",
}


def _not_identifying() -> set[str]:
    """Config keys that never tell runs apart: the `runtime` settings (where a run was written,
    whether bars were drawn, which device ran it...)."""
    from miet_fed.config import SimulateConfig, runtime_keys

    return {f"{s}.{k}" for s, keys in runtime_keys(SimulateConfig).items() for k in keys}


TABLES = ("clients", "rounds", "epochs", "ledger", "partitions")
FILES = {
    "clients": "clients.csv",
    "rounds": "rounds.csv",
    "epochs": "metrics.csv",
    "ledger": "ledger.csv",
    "partitions": "partitions.csv",
}
RUN_MARKER = "summary.json"


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file() or path.stat().st_size <= 1:
        return pd.DataFrame()
    return pd.read_csv(path)


def integer_bytes(df: pd.DataFrame) -> pd.DataFrame:
    """Byte counts as integers (nullable where a row has none), never floats."""
    for col in df.columns:
        if "bytes" not in str(col) or not pd.api.types.is_numeric_dtype(df[col]):
            continue
        if pd.api.types.is_bool_dtype(df[col]):
            continue
        values = df[col].dropna()
        if (values == values.round()).all():
            df[col] = df[col].astype("int64" if len(values) == len(df) else "Int64")
    return df


def _flat_config(path: Path) -> dict[str, Any]:
    """config.toml as {"section.key": value} (a strategy's own table as "fed.<strategy>.key"),
    read generically (older or newer keys alike)."""
    from miet_fed.config import flatten, read_toml

    if not path.is_file():
        return {}
    flat = flatten({s: t for s, t in read_toml(path).items() if isinstance(t, dict)})
    return {k: v for k, v in flat.items() if not isinstance(v, list)}


class Run:
    """One finished run folder; its tables load on first use, each row tagged with the run."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        marker = self.path / RUN_MARKER
        if not marker.is_file():
            raise MietError(
                f"{self.path} is not a finished miet-fed run (no {RUN_MARKER}); give the folder "
                "`miet-fed tune` or `simulate` wrote (or a sweep folder to load_runs)"
            )
        try:
            self.info: dict[str, Any] = json.loads(marker.read_text())
        except (OSError, ValueError) as exc:
            raise MietError(f"{marker} is not readable JSON ({exc}); rerun that run") from None
        self.config: dict[str, Any] = _flat_config(self.path / "config.toml")
        self.name = self.path.name  # the `run` column; `Runs` makes it unique across folders

    @property
    def command(self) -> str:
        return str(self.info.get("command", ""))

    @property
    def federated(self) -> bool:
        """Devices and rounds (simulate), or one device without a ledger file (tune)."""
        kind = JOBS.get(self.command)
        return kind is not None and kind.federated

    def ids(self) -> dict[str, Any]:
        """The run's identifying settings: summary.json first, config.toml where it is silent."""
        out: dict[str, Any] = {"run": self.name}
        for col, dotted in ID_COLUMNS.items():
            value = self.info.get(col, self.config.get(dotted))
            if not self.federated and dotted.startswith("fed."):
                value = None  # one device, no federation: not the default of an unused section
            out[col] = value
        return out

    def _tagged(self, df: pd.DataFrame) -> pd.DataFrame:
        ids = self.ids()
        df = df.copy()
        for i, (col, value) in enumerate(ids.items()):
            if col in df.columns:
                df = df.drop(columns=col)
            df.insert(i, col, value)
        return integer_bytes(df)

    def table(self, name: str) -> pd.DataFrame:
        """One of TABLES, tagged; empty (with the id columns) where the run has none."""
        if name not in FILES:
            raise MietError(f"unknown table '{name}'; valid: {', '.join(TABLES)}")
        if name == "ledger" and not self.federated:
            return self._tagged(_tune_ledger(self.info))
        return self._tagged(_read_csv(self.path / FILES[name]))

    @cached_property
    def clients(self) -> pd.DataFrame:
        return self.table("clients")

    @cached_property
    def rounds(self) -> pd.DataFrame:
        return self.table("rounds")

    @cached_property
    def epochs(self) -> pd.DataFrame:
        return self.table("epochs")

    @cached_property
    def ledger(self) -> pd.DataFrame:
        return self.table("ledger")

    @cached_property
    def partitions(self) -> pd.DataFrame:
        return self.table("partitions")

    @cached_property
    def summary(self) -> pd.DataFrame:
        return self.summary_row()

    def summary_row(self) -> pd.DataFrame:
        """One row: the id columns, then every scalar of summary.json (dicts as `a.b` columns)."""
        row = dict(self.ids())
        for key, value in self.info.items():
            if key in row:
                continue
            if isinstance(value, dict):
                row.update({f"{key}.{k}": v for k, v in value.items()})
            elif isinstance(value, list):
                row[key] = json.dumps(value)
            else:
                row[key] = value
        return integer_bytes(pd.DataFrame([row]))

    def comm_cost(self) -> pd.DataFrame:
        """Bytes by direction and kind (one row): see `Runs.comm_cost`."""
        return Runs([self]).comm_cost()

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, command={self.command!r})"


def _tune_ledger(info: dict[str, Any]) -> pd.DataFrame:
    """A tune run is one device: its images go up once and their payloads come down once."""
    n = sum(int(info.get(k, 0) or 0) for k in ("n_train", "n_val", "n_test"))
    rows = []
    for direction, kind, per_image in (
        ("up", "image", info.get("raw_image_bytes")),
        ("down", "feature", info.get("bytes_per_image")),
    ):
        if per_image is not None and n:
            total = int(per_image) * n
            rows.append(
                {
                    "round": 0,
                    "client": 0,
                    "phase": "tune",
                    "direction": direction,
                    "kind": kind,
                    "bytes": total,
                    "wire_bytes": total,
                }
            )
    return pd.DataFrame(rows)


class Runs:
    """Several runs (a sweep, a results folder, a list): the same frames, concatenated.

    Besides the id columns, every config key whose value differs between the runs becomes a
    column (dotted, e.g. `train.lr`), so grouping by it never merges different runs.
    """

    def __init__(self, runs: Iterable[Run]) -> None:
        self.runs = list(runs)
        names = [r.path.name for r in self.runs]
        if len(set(names)) < len(names):  # two sweeps both have runs/strategy_fedavg
            root = Path(os.path.commonpath([r.path.resolve() for r in self.runs]))
            for r in self.runs:
                r.name = r.path.resolve().relative_to(root).as_posix()

    def __len__(self) -> int:
        return len(self.runs)

    def __iter__(self) -> Iterator[Run]:
        return iter(self.runs)

    def __getitem__(self, i: int) -> Run:
        return self.runs[i]

    @cached_property
    def varied(self) -> list[str]:
        """Config keys with more than one value across the runs (not already an id column)."""
        shown = set(ID_COLUMNS.values())
        not_identifying = _not_identifying()
        keys: list[str] = []
        for run in self.runs:
            keys += [k for k in run.config if k not in keys]
        return [
            k
            for k in keys
            if k not in shown
            and k not in not_identifying
            and len({json.dumps(r.config.get(k), default=str) for r in self.runs}) > 1
        ]

    def _concat(self, frames: Iterable[tuple[Run, pd.DataFrame]]) -> pd.DataFrame:
        parts = []
        n_ids = len(ID_COLUMNS) + 1
        for run, df in frames:
            df = df.copy()
            for j, key in enumerate(self.varied):
                df.insert(n_ids + j, key, run.config.get(key))
            parts.append(df)
        parts = [p for p in parts if len(p)] or parts[:1]
        if not parts:
            return pd.DataFrame(columns=["run", *ID_COLUMNS])
        return integer_bytes(pd.concat(parts, ignore_index=True, sort=False))

    def table(self, name: str) -> pd.DataFrame:
        return self._concat((r, r.table(name)) for r in self.runs)

    @cached_property
    def clients(self) -> pd.DataFrame:
        return self.table("clients")

    @cached_property
    def rounds(self) -> pd.DataFrame:
        return self.table("rounds")

    @cached_property
    def epochs(self) -> pd.DataFrame:
        return self.table("epochs")

    @cached_property
    def ledger(self) -> pd.DataFrame:
        return self.table("ledger")

    @cached_property
    def partitions(self) -> pd.DataFrame:
        return self.table("partitions")

    @cached_property
    def summary(self) -> pd.DataFrame:
        return self._concat((r, r.summary_row()) for r in self.runs)

    def comm_cost(self) -> pd.DataFrame:
        """One row per run: its id columns, then integer bytes per direction and kind
        (`bytes_down_feature`, `bytes_up_params`, ...), `bytes_up`, `bytes_down`, `bytes_total`
        and `wire_bytes_total` (parameters with Flower's framing). From each run's ledger;
        a tune run counts its images up and their payloads down once."""
        ledger = self.ledger
        keys = ["run", *ID_COLUMNS, *self.varied]
        if ledger.empty:
            return pd.DataFrame(columns=[*keys, "bytes_up", "bytes_down", "bytes_total"])
        per_run = self.summary[keys].copy()
        by_kind = ledger.pivot_table(
            index="run", columns=["direction", "kind"], values="bytes", aggfunc="sum"
        )
        by_kind.columns = [f"bytes_{d}_{k}" for d, k in by_kind.columns]
        by_dir = ledger.pivot_table(index="run", columns="direction", values="bytes", aggfunc="sum")
        by_dir.columns = [f"bytes_{d}" for d in by_dir.columns]
        totals = ledger.groupby("run").agg(
            bytes_total=("bytes", "sum"), wire_bytes_total=("wire_bytes", "sum")
        )
        table = per_run.join(by_kind.join(by_dir).join(totals), on="run")
        cost_cols = [c for c in table.columns if c.startswith(("bytes_", "wire_bytes"))]
        table[cost_cols] = table[cost_cols].fillna(0)
        return integer_bytes(table.reset_index(drop=True))

    def __repr__(self) -> str:
        names = ", ".join(r.name for r in self.runs[:4]) + (", ..." if len(self) > 4 else "")
        return f"Runs({len(self)} runs: {names})"


def load_run(path: str | os.PathLike[str]) -> Run:
    """One run folder, as `tune`, `simulate` or a sweep point wrote it."""
    return Run(path)


def _find_runs(root: Path) -> list[Path]:
    """Run folders at or under `root`, skipping hidden (temporary, checkpoint) folders."""
    if (root / RUN_MARKER).is_file():
        return [root]
    found = []
    for marker in sorted(root.rglob(RUN_MARKER)):
        rel = marker.parent.relative_to(root)
        if not any(part.startswith(".") for part in rel.parts) and "report" not in rel.parts:
            found.append(marker.parent)
    return found


def load_runs(paths_or_sweep_dir: str | os.PathLike[str] | Iterable[Any]) -> Runs:
    """A sweep folder, a results folder, or a list of run folders (each may hold many runs)."""
    if not isinstance(paths_or_sweep_dir, (str, os.PathLike, Iterable)):
        raise MietError(
            "load_runs: give a sweep folder, a results folder or a list of run folders; got "
            f"{type(paths_or_sweep_dir).__name__}"
        )
    items = (
        [paths_or_sweep_dir]
        if isinstance(paths_or_sweep_dir, (str, os.PathLike))
        else list(paths_or_sweep_dir)
    )
    folders: list[Path] = []
    for item in items:
        if isinstance(item, Run):
            folders.append(item.path)
            continue
        if not isinstance(item, (str, os.PathLike)):
            raise MietError(f"load_runs: {item!r} is not a folder path or a Run")
        root = Path(item)
        if not root.is_dir():
            raise MietError(f"load_runs: {root} is not a folder; give a run or sweep folder")
        found = _find_runs(root)
        if not found:
            raise MietError(
                f"load_runs: no finished run under {root} (no {RUN_MARKER}); give the folder "
                "`miet-fed tune`, `simulate` or `sweep` wrote"
            )
        folders += [f for f in found if f not in folders]
    if not folders:
        raise MietError("load_runs: no folders given; pass a sweep folder or a list of runs")
    return Runs(Run(f) for f in folders)
