"""`miet-fed sweep`: run a grid of `tune` or `simulate` jobs from one TOML file, resumably.

A sweep file names a base config, fixed overrides (`[set]`), and the points to run: the cartesian
product of `[grid]` (dotted config keys -> lists of values), optionally crossed with explicit
`[[point]]` tables (one dict of dotted overrides each) for ablations that are not a product:

    [sweep]
    name = "sweep_clients"          # results/<name>/ (or --out DIR)
    command = "simulate"            # or "tune"
    base = "configs/simulate.toml"  # optional, relative to the working directory
    seeds = [0, 1]                  # optional: shorthand for a run.seed grid axis
    [set]
    "fed.rounds" = 5
    [grid]
    "fed.num_clients" = [10, 20, 50]
    "fed.strategy" = ["local", "fedper"]

Every point's config is built and checked before anything runs, so a typo fails in one line and
leaves nothing behind. Each point runs into `<out>/runs/<slug>/` (atomic, like every run); a point
whose folder already holds `summary.json` is skipped, so starting an interrupted sweep again
finishes the rest. After every run the sweep rewrites (atomically) `<out>/runs.csv` (one tidy row
per run and round/epoch) and `<out>/summary.csv` (one row per run, with an `error` column), and
`<out>/sweep.json` records the expanded points.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

from miet_fed.config import (
    SimulateConfig,
    TuneConfig,
    _CliValue,
    build_config,
    parse_overrides,
    read_toml,
    to_dict,
)
from miet_fed.errors import MietError
from miet_fed.results import RESULTS_ROOT, own_folder, slug, write_json

HELP = "run a grid of tune or simulate jobs from a sweep TOML (resumable; runs.csv, summary.csv)"

CONFIG_CLASSES: dict[str, type] = {"tune": TuneConfig, "simulate": SimulateConfig}
SWEEP_KEYS = ("name", "command", "base", "seeds", "description")
TOP_LEVEL = ("sweep", "set", "grid", "point")
#: Keys the sweep itself decides for every run.
RESERVED = ("run.out",)
#: Summary fields copied onto every runs.csv row: what a tidy per-round table needs to group by.
ID_FIELDS = (
    "command",
    "dataset",
    "model",
    "img_size",
    "gather",
    "k",
    "dtype",
    "edge",
    "strategy",
    "num_clients",
    "clients_per_round",
    "rounds",
    "partition",
    "alpha",
    "seed",
    "bytes_per_image",
    "trainable_params",
)


@dataclass(frozen=True)
class Sweep:
    """A parsed sweep file: dotted overrides, not yet expanded or validated."""

    name: str
    command: str
    base: Path | None = None
    fixed: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    points: list[dict[str, Any]] = field(default_factory=list)
    description: str = ""
    source: str = "sweep"


@dataclass(frozen=True)
class Point:
    """One run of the sweep, its config fully built and checked."""

    index: int  # 1-based, in sweep order
    overrides: dict[str, Any]  # the point's own dotted overrides (grid and explicit)
    values: dict[str, Any]  # resolved value of every varied key (the grid columns)
    slug: str
    folder: Path
    cfg: Any

    @property
    def label(self) -> str:
        return " ".join(f"{k}={_fmt(v)}" for k, v in self.values.items()) or "(base config)"

    @property
    def done(self) -> bool:
        return (self.folder / "summary.json").is_file()


@dataclass
class Outcome:
    """What happened to one point in this invocation."""

    status: str  # "ran", "skipped", "failed"
    seconds: float = 0.0
    error: str = ""


# ---------------------------------------------------------------- parsing


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _flatten(table: dict[str, Any], where: str, prefix: str = "") -> dict[str, Any]:
    """Accept both `"fed.rounds" = 5` and `fed.rounds = 5` (a nested TOML table)."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, where, dotted + "."))
        else:
            flat[dotted] = value
    for dotted in flat:
        if dotted.count(".") != 1 or not all(dotted.split(".")):
            raise MietError(
                f"{where}: '{dotted}' is not a section.key config key (e.g. fed.rounds)"
            )
        if dotted in RESERVED:
            raise MietError(
                f"{where}: {dotted} is set by the sweep (<out>/runs/<point>); use --out for the "
                "sweep folder instead"
            )
    return flat


def _table(data: dict[str, Any], name: str, source: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise MietError(f"[{name}] in {source} must be a table")
    return value


def parse_sweep(data: dict[str, Any], source: str, default_name: str = "sweep") -> Sweep:
    """A sweep TOML document (already parsed) -> Sweep, with its shape checked."""
    unknown = sorted(set(data) - set(TOP_LEVEL))
    if unknown:
        raise MietError(
            f"unknown table [{unknown[0]}] in {source}; valid: "
            + ", ".join(f"[{t}]" for t in TOP_LEVEL[:3])
            + ", [[point]]"
        )
    head = _table(data, "sweep", source)
    bad = sorted(set(head) - set(SWEEP_KEYS))
    if bad:
        raise MietError(f"unknown key sweep.{bad[0]} in {source}; valid: {', '.join(SWEEP_KEYS)}")
    command = head.get("command")
    if command not in CONFIG_CLASSES:
        raise MietError(
            f"sweep.command in {source} must be one of {', '.join(CONFIG_CLASSES)}, got {command!r}"
        )
    name = head.get("name", default_name)
    if not isinstance(name, str) or not name or slug(name) != name:
        raise MietError(f"sweep.name in {source} must be a plain folder name, got {name!r}")
    base = head.get("base")
    if base is not None and not isinstance(base, str):
        raise MietError(f"sweep.base in {source} must be a path string, got {base!r}")

    fixed = _flatten(_table(data, "set", source), f"[set] in {source}")
    grid_raw = _flatten(_table(data, "grid", source), f"[grid] in {source}")
    grid: dict[str, list[Any]] = {}
    for key, values in grid_raw.items():
        if not isinstance(values, list) or not values:
            raise MietError(f"[grid] {key} in {source} must be a non-empty list of values")
        grid[key] = values
    seeds = head.get("seeds")
    if seeds is not None:
        if not isinstance(seeds, list) or not seeds or not all(type(s) is int for s in seeds):
            raise MietError(f"sweep.seeds in {source} must be a non-empty list of integers")
        if "run.seed" in grid or "run.seed" in fixed:
            raise MietError(f"{source}: give the seeds once, in sweep.seeds or as run.seed")
        grid["run.seed"] = seeds

    raw_points = data.get("point", [])
    if not isinstance(raw_points, list) or not all(isinstance(p, dict) for p in raw_points):
        raise MietError(f"point in {source} must be an array of tables: [[point]]")
    points = [_flatten(p, f"[[point]] {i + 1} in {source}") for i, p in enumerate(raw_points)]
    description = head.get("description", "")
    return Sweep(
        name=name,
        command=command,
        base=Path(base) if base else None,
        fixed=fixed,
        grid=grid,
        points=points,
        description=str(description),
        source=source,
    )


def add_set(sweep: Sweep, pairs: Iterable[str]) -> Sweep:
    """Command-line "section.key=value" pairs (typed by the field) on top of [set]."""
    extra = {
        f"{section}.{key}": value
        for section, values in parse_overrides(list(pairs)).items()
        for key, value in values.items()
    }
    _flatten(extra, "--set")  # same checks as [set]
    return replace(sweep, fixed={**sweep.fixed, **extra})


def add_grid(sweep: Sweep, pairs: Iterable[str]) -> Sweep:
    """Command-line "section.key=v1,v2,..." axes (values typed by the field, as --set): a key
    also in the file's [grid] or [set] takes these values instead."""
    axes: dict[str, list[Any]] = {}
    for pair in pairs:
        dotted, sep, values = pair.partition("=")
        items = [v.strip() for v in values.split(",")] if sep else []
        if not sep or not all(items):
            raise MietError(
                f"--grid expects section.key=v1,v2,... with no empty value, got '{pair}' "
                "(e.g. --grid fed.num_clients=10,20,50)"
            )
        axes[dotted.strip()] = [_CliValue(v) for v in items]
    _flatten(axes, "--grid")  # same key checks as [grid]
    fixed = {k: v for k, v in sweep.fixed.items() if k not in axes}
    return replace(sweep, grid={**sweep.grid, **axes}, fixed=fixed)


def from_args(args: argparse.Namespace) -> Sweep:
    """The sweep of a command line: a sweep file and/or --grid axes, then --set pairs."""
    if args.sweep is not None:
        sweep = parse_sweep(read_toml(Path(args.sweep)), str(args.sweep), Path(args.sweep).stem)
        if args.sweep_command and args.sweep_command != sweep.command:
            raise MietError(
                f"--command {args.sweep_command} but {args.sweep} says {sweep.command}; "
                "drop --command or use another sweep file"
            )
        if args.base:
            sweep = replace(sweep, base=args.base)
        if args.name:
            sweep = replace(sweep, name=args.name)
    elif not args.grid:
        raise MietError(
            "give a sweep file or at least one --grid section.key=v1,v2,... "
            "(e.g. miet-fed sweep --grid fed.num_clients=10,20 --set fed.rounds=3)"
        )
    else:
        keys = [g.partition("=")[0].strip().split(".")[-1] for g in args.grid]
        name = args.name or slug("sweep", *keys)
        if slug(name) != name:
            raise MietError(f"--name must be a plain folder name, got {name!r}")
        sweep = Sweep(name=name, command=args.sweep_command or "simulate", base=args.base)
        sweep = replace(sweep, source="the command line")
    return add_set(add_grid(sweep, args.grid), args.set)


def load_sweep(path: Path, extra_set: Iterable[str] = ()) -> Sweep:
    """Read a sweep file; `extra_set` pairs join its [set]."""
    return add_set(parse_sweep(read_toml(Path(path)), str(path), Path(path).stem), extra_set)


# ---------------------------------------------------------------- planning


def expand(sweep: Sweep) -> list[dict[str, Any]]:
    """Explicit points (or one empty point) crossed with the grid's cartesian product."""
    points = sweep.points or [{}]
    keys = list(sweep.grid)
    combos = [
        dict(zip(keys, vals, strict=True)) for vals in itertools.product(*sweep.grid.values())
    ]
    out = []
    for i, point in enumerate(points):
        for key in point:
            if key in sweep.grid:
                raise MietError(
                    f"{sweep.source}: {key} is in [[point]] {i + 1} and in [grid]; vary it once"
                )
        for combo in combos:
            out.append({**point, **combo})
    for key in sweep.fixed:
        if any(key in p for p in out):
            raise MietError(f"{sweep.source}: {key} is both fixed ([set] or --set) and varied")
    return out


def varied_keys(sweep: Sweep) -> list[str]:
    """The grid columns: keys of the explicit points (first appearance), then the grid's."""
    keys: list[str] = []
    for point in sweep.points:
        keys += [k for k in point if k not in keys]
    return keys + [k for k in sweep.grid if k not in keys]


def _nested(flat: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for dotted, value in flat.items():
        section, key = dotted.split(".", 1)
        out.setdefault(section, {})[key] = value
    return out


def _lookup(cfg: Any, dotted: str) -> Any:
    section, key = dotted.split(".", 1)
    return getattr(getattr(cfg, section), key)


def _labels(keys: list[str]) -> dict[str, str]:
    """Short folder-name labels: `fed.num_clients` -> `num_clients`, `edge.name` -> `edge`."""
    short = {k: (k.split(".")[0] if k.endswith(".name") else k.split(".")[1]) for k in keys}
    counts = {s: list(short.values()).count(s) for s in short.values()}
    return {k: (s if counts[s] == 1 else k.replace(".", "_")) for k, s in short.items()}


def _check_point(command: str, cfg: Any) -> None:
    """Everything a run would check before its first forward, so a point that cannot run fails
    at planning, before any point runs: registered names, the selection (n_train against the
    dataset), the depth k, and for simulate the partition (no client without data)."""
    if command == "tune":
        from miet_fed.cloud.service import payload_info
        from miet_fed.data import load_dataset, vtab_split
        from miet_fed.tuning import check_names

        check_names(cfg)
        ds = load_dataset(cfg.data.dataset)
        vtab_split(ds.labels, cfg.data.n_train, cfg.data.n_test or None, cfg.run.seed)
        payload_info(cfg.model)
        return
    import tempfile

    from miet_fed.federation.runner import prepare

    with tempfile.TemporaryDirectory(prefix="miet-fed-plan-") as tmp:
        prepare(cfg, Path(tmp))  # data, partitions, payload shape; starts nothing


def _comparable(cfg: Any) -> dict[str, Any]:
    d = to_dict(cfg)
    d["run"] = {k: v for k, v in d["run"].items() if k not in ("out", "progress")}
    return d


def _check_existing(point: Point, command: str) -> None:
    """A finished run folder must hold the run this point asks for, or resuming would mix runs."""
    saved_path = point.folder / "config.toml"
    if not point.done or not saved_path.is_file():
        return
    try:
        saved = build_config(CONFIG_CLASSES[command], read_toml(saved_path), str(saved_path))
    except MietError:
        saved = None
    old = _comparable(saved) if saved is not None else {}
    new = _comparable(point.cfg)
    if old != new:
        diff = [
            f"{s}.{k}: {old.get(s, {}).get(k)!r} -> {v!r}"
            for s, values in new.items()
            for k, v in values.items()
            if old.get(s, {}).get(k) != v
        ]
        raise MietError(
            f"{point.folder} holds a finished run with another config ({'; '.join(diff[:3])}); "
            "delete that folder to rerun it, or sweep into another --out"
        )


def plan(sweep: Sweep, out: Path, quiet: bool = False, check_data: bool = True) -> list[Point]:
    """Build and check every point's config (and, unless told not to, its data) up front;
    nothing is written."""
    cls = CONFIG_CLASSES[sweep.command]
    base = read_toml(sweep.base) if sweep.base is not None else {}
    keys = varied_keys(sweep)
    labels = _labels(keys)
    points: list[Point] = []
    seen: dict[str, int] = {}
    overrides_list = expand(sweep)
    for i, overrides in enumerate(overrides_list, start=1):
        data = {s: dict(v) if isinstance(v, dict) else v for s, v in base.items()}
        for section, values in _nested({**sweep.fixed, **overrides}).items():
            if section in data and not isinstance(data[section], dict):
                raise MietError(f"[{section}] in {sweep.base} must be a table of keys")
            data.setdefault(section, {}).update(values)
        desc = " ".join(f"{k}={_fmt(v)}" for k, v in overrides.items()) or "base config"
        where = f"{sweep.source} (point {i}: {desc})"
        try:
            cfg = build_config(cls, data, where)
            if check_data:
                _check_point(sweep.command, cfg)
        except MietError as exc:  # say which point, once
            raise MietError(str(exc) if where in str(exc) else f"{exc} [{where}]") from None
        values = {k: _lookup(cfg, k) for k in keys}
        name = slug(*(f"{labels[k]}_{_fmt(v)}" for k, v in values.items())) or "base"
        if name in seen:
            raise MietError(
                f"{sweep.source}: points {seen[name]} and {i} are the same run ({name}); "
                "remove the duplicate"
            )
        seen[name] = i
        folder = out / "runs" / name
        run = replace(cfg.run, out=str(folder), progress=cfg.run.progress and not quiet)
        point = Point(i, overrides, values, name, folder, replace(cfg, run=run))
        _check_existing(point, sweep.command)
        points.append(point)
    return points


# ---------------------------------------------------------------- tables


def write_csv_atomic(df: pd.DataFrame, path: Path) -> None:
    """Temp file + os.replace: a reader never sees half a table, an interrupt leaves the old."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        df.to_csv(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _scalar(value: Any) -> Any:
    """summary.json values as CSV cells: lists and dicts become JSON text."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def _read_summary(point: Point) -> dict[str, Any] | None:
    path = point.folder / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _run_error(point: Point, summary: dict[str, Any]) -> str:
    """A finished simulate run with client failures counts as failed (as `simulate` exits 2)."""
    fed = getattr(point.cfg, "fed", None)
    n = summary.get("failures") or 0
    if fed is not None and n and not fed.allow_failures:
        return f"{n} client replies failed (see clients.csv); set fed.allow_failures=true"
    return ""


def _rows_table(point: Point, summary: dict[str, Any]) -> pd.DataFrame:
    """One run's per-round (simulate) or per-epoch (tune) rows, as the run wrote them."""
    name = "rounds.csv" if summary.get("command") == "simulate" else "metrics.csv"
    path = point.folder / name
    df = pd.read_csv(path) if path.is_file() and path.stat().st_size else pd.DataFrame()
    if df.empty:
        df = pd.DataFrame([{}])
    for key in ID_FIELDS:
        if key in summary and key not in df.columns:
            df[key] = _scalar(summary[key])
    return df


def build_tables(points: list[Point], errors: dict[int, str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, summary) for every point with results, in sweep order; failed points in summary."""
    from miet_fed.report import total_bytes

    run_frames, rows = [], []
    for p in points:
        front = {"run": p.slug, **{k: _scalar(v) for k, v in p.values.items()}}
        summary = _read_summary(p)
        if summary is None:
            if p.index in errors:
                rows.append({**front, "error": errors[p.index]})
            continue
        rows_df = _rows_table(p, summary)
        rounds = rows_df if summary.get("command") == "simulate" else None
        total, source = total_bytes(summary, rounds)
        error = errors.get(p.index) or _run_error(p, summary)
        scalars = {k: _scalar(v) for k, v in summary.items() if k not in ("out", "total_bytes")}
        rows.append(
            {**front, "error": error, **scalars, "total_bytes": total, "bytes_source": source}
        )
        rows_df.insert(0, "run", p.slug)
        for j, (k, v) in enumerate(p.values.items(), start=1):
            rows_df.insert(j, k, _scalar(v))
        run_frames.append(rows_df)
    runs = pd.concat(run_frames, ignore_index=True, sort=False) if run_frames else pd.DataFrame()
    return runs, pd.DataFrame(rows)


def write_tables(out: Path, points: list[Point], errors: dict[int, str]) -> None:
    runs, summary = build_tables(points, errors)
    out.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(runs, out / "runs.csv")
    write_csv_atomic(summary, out / "summary.csv")


def _write_plan(out: Path, sweep: Sweep, points: list[Point]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".sweep.json.tmp-{uuid.uuid4().hex[:8]}"
    write_json(
        tmp,
        {
            "name": sweep.name,
            "command": sweep.command,
            "description": sweep.description,
            "source": sweep.source,
            "base": str(sweep.base) if sweep.base else None,
            "set": sweep.fixed,
            "grid": sweep.grid,
            "columns": varied_keys(sweep),
            "points": [
                {"index": p.index, "run": p.slug, "overrides": p.overrides, "values": p.values}
                for p in points
            ],
        },
    )
    os.replace(tmp, out / "sweep.json")


# ---------------------------------------------------------------- running


def _runner(command: str) -> Callable[[Any], dict[str, Any]]:
    if command == "tune":
        from miet_fed.tuning import run_tune

        return run_tune
    from miet_fed.federation.runner import run_simulate

    return run_simulate


def run_sweep(
    sweep: Sweep,
    out: Path | None = None,
    *,
    quiet: bool = False,
    log: TextIO | None = None,
) -> tuple[list[Point], dict[int, Outcome]]:
    """Run every point not done yet, one after the other; failures are recorded, not raised."""
    log = log or sys.stderr
    out = Path(out) if out is not None else RESULTS_ROOT / sweep.name
    points = plan(sweep, out, quiet)
    own_folder(out, "sweep")  # never `..`, never a folder the user's files live in
    run_one = _runner(sweep.command)
    _write_plan(out, sweep, points)
    outcomes: dict[int, Outcome] = {}
    errors: dict[int, str] = {}
    n = len(points)
    for p in points:
        head = f"[{p.index}/{n}] {p.label} ..."
        if p.done:
            outcomes[p.index] = Outcome("skipped")
            print(f"{head} skipped (done)", file=log, flush=True)
            continue
        if not quiet:
            print(f"{head} running", file=log, flush=True)
        t0 = time.perf_counter()
        try:
            run_one(p.cfg)
        except KeyboardInterrupt:
            write_tables(out, points, errors)
            print(
                f"{head} interrupted; finished runs are kept in {out}/runs: start the sweep "
                "again to run the rest",
                file=log,
                flush=True,
            )
            raise
        except Exception as exc:  # noqa: BLE001 - one failed point must not stop the sweep
            if not isinstance(exc, MietError):
                traceback.print_exc(file=log)
            msg = " ".join(str(exc).split()) or type(exc).__name__
            errors[p.index] = msg if isinstance(exc, MietError) else f"{type(exc).__name__}: {msg}"
            outcomes[p.index] = Outcome("failed", time.perf_counter() - t0, errors[p.index])
            print(f"{head} FAILED: {errors[p.index]}", file=log, flush=True)
        else:
            seconds = time.perf_counter() - t0
            outcomes[p.index] = Outcome("ran", seconds)
            print(f"{head} done in {seconds:.0f} s", file=log, flush=True)
        write_tables(out, points, errors)
    write_tables(out, points, errors)
    for p in points:  # a finished run whose clients failed counts as failed
        o = outcomes[p.index]
        if o.status != "failed" and p.done and (err := _run_error(p, _read_summary(p) or {})):
            o.status, o.error = "failed", err
    return points, outcomes


# ---------------------------------------------------------------- CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "sweep",
        type=Path,
        nargs="?",
        default=None,
        help="sweep TOML ([sweep], [set], [grid], [[point]]); optional with --grid",
    )
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="SECTION.KEY=V1,V2,...",
        help="vary one key over these values (repeatable; the points are the cartesian product)",
    )
    p.add_argument(
        "--command",
        dest="sweep_command",
        choices=tuple(CONFIG_CLASSES),
        help="without a sweep file: what every point runs (default: simulate)",
    )
    p.add_argument("--name", help="the sweep's name (folder results/<name>)")
    p.add_argument("--base", type=Path, help="the config file every point starts from")
    p.add_argument("--out", type=Path, help="sweep folder (default: results/<sweep.name>)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="one more fixed override for every run (repeatable)",
    )
    p.add_argument("--dry-run", action="store_true", help="list the points; run nothing")
    p.add_argument("--json", action="store_true", help="print a JSON summary line last")
    p.add_argument("--quiet", action="store_true", help="no progress bars (one line per run)")


def _print_table(df: pd.DataFrame) -> None:
    print(df.to_string(index=False) if len(df) else "(no runs)")


def run(args: argparse.Namespace) -> int:
    sweep = from_args(args)
    out = args.out if args.out is not None else RESULTS_ROOT / sweep.name
    if args.dry_run:
        points = plan(sweep, out, args.quiet)
        table = pd.DataFrame(
            [
                {"#": p.index, "run": p.slug, "status": "done" if p.done else "to run"}
                | {k: _fmt(v) for k, v in p.values.items()}
                for p in points
            ]
        )
        _print_table(table)
        print(f"{len(points)} points, {sum(p.done for p in points)} done; folder: {out}")
        if args.json:
            print(
                json.dumps(
                    {
                        "name": sweep.name,
                        "command": sweep.command,
                        "out": str(out),
                        "points": [
                            {"run": p.slug, "values": p.values, "done": p.done} for p in points
                        ],
                    },
                    default=str,
                )
            )
        return 0

    points, outcomes = run_sweep(sweep, out, quiet=args.quiet)
    _, summary = build_tables(points, {i: o.error for i, o in outcomes.items() if o.error})
    metric = "test_acc" if sweep.command == "tune" else "personal_acc"
    cols = [
        c
        for c in ["run", metric, "global_acc", "total_bytes", "wall_seconds", "error"]
        if c in summary.columns
    ]
    _print_table(summary[cols] if len(summary) else summary)
    counts = {
        s: sum(o.status == s for o in outcomes.values()) for s in ("ran", "skipped", "failed")
    }
    print(
        f"results: {out} (runs.csv, summary.csv); "
        + ", ".join(f"{v} {k}" for k, v in counts.items())
    )
    if args.json:
        print(
            json.dumps(
                {
                    "name": sweep.name,
                    "command": sweep.command,
                    "out": str(out),
                    "points": len(points),
                    **counts,
                    "runs_csv": str(out / "runs.csv"),
                    "summary_csv": str(out / "summary.csv"),
                    "failed_runs": [p.slug for p in points if outcomes[p.index].status == "failed"],
                }
            )
        )
    if counts["failed"]:
        print(f"miet-fed sweep: {counts['failed']} of {len(points)} runs failed", file=sys.stderr)
        return 1
    return 0
