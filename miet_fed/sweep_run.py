"""Running a sweep (`miet-fed sweep`): each point not done yet, one after the other, with the
tidy tables rewritten after every run; and the command line, which can build the grid itself
(`--grid section.key=v1,v2,...`). Parsing and planning live in `miet_fed.sweep`."""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

from miet_fed.config import _CliValue, read_toml
from miet_fed.errors import MietError
from miet_fed.federation.ray_setup import ray_session
from miet_fed.files import atomic_write
from miet_fed.jobs import job
from miet_fed.results import RESULTS_ROOT, own_folder, slug, write_json
from miet_fed.sweep import (
    CONFIG_CLASSES,
    Outcome,
    Point,
    Sweep,
    _flatten,
    _fmt,
    add_set,
    parse_sweep,
    plan,
    varied_keys,
)

HELP = "run a grid of tune or simulate jobs from a sweep TOML (resumable; runs.csv, summary.csv)"


#: Summary fields copied onto every runs.csv row: what a tidy per-round table needs to group by.
ID_FIELDS = (
    "command",
    "dataset",
    "model",
    "img_size",
    "gather",
    "k",
    "dtype",
    "token_pool",
    "proj_rank",
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
    sweep = add_set(add_grid(sweep, args.grid), args.set)
    if getattr(args, "plugin", None):  # every point's run.plugins: its Ray workers load them too
        given = sweep.fixed.get("run.plugins", [])
        given = given.split(",") if isinstance(given, str) else list(given)
        sweep = replace(sweep, fixed={**sweep.fixed, "run.plugins": [*given, *args.plugin]})
    return sweep


# ---------------------------------------------------------------- tables


def write_csv_atomic(df: pd.DataFrame, path: Path) -> None:
    """A reader never sees half a table, an interrupt leaves the old (miet_fed.files)."""
    atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))


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
    path = point.folder / job(summary.get("command")).rows_file
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
        rounds = rows_df if job(summary.get("command")).federated else None
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
    plan = {
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
    }
    atomic_write(out / "sweep.json", lambda tmp: write_json(tmp, plan))


# ---------------------------------------------------------------- running


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
    run_one = job(sweep.command).runner
    _write_plan(out, sweep, points)
    outcomes: dict[int, Outcome] = {}
    errors: dict[int, str] = {}
    n = len(points)
    # One Ray instance and backbone actor for all the points (each skips their start-up).
    with ray_session():
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
                kind = "" if isinstance(exc, MietError) else f"{type(exc).__name__}: "
                errors[p.index] = kind + msg
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
    from miet_fed.cli import add_plugin

    add_plugin(p)


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
    metric = job(sweep.command).primary
    cols = [
        c
        for c in ["run", metric, "val_acc", "global_acc", "total_bytes", "wall_seconds", "error"]
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
