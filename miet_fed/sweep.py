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

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from miet_fed.config import (
    build_config,
    flatten,
    merge,
    nest,
    parse_overrides,
    read_toml,
    strip_runtime,
    to_dict,
    with_legacy,
)
from miet_fed.errors import MietError
from miet_fed.jobs import config_classes, job
from miet_fed.results import slug

CONFIG_CLASSES: dict[str, type] = config_classes()
SWEEP_KEYS = ("name", "command", "base", "seeds", "description")
TOP_LEVEL = ("sweep", "set", "grid", "point")
#: Keys the sweep itself decides for every run.
RESERVED = ("run.out",)


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
        if "." not in dotted or not all(dotted.split(".")):
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
    extra = flatten(parse_overrides(list(pairs)))
    _flatten(extra, "--set")  # same checks as [set]
    return replace(sweep, fixed={**sweep.fixed, **extra})


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


def _lookup(cfg: Any, dotted: str, given: Any) -> Any:
    """The point's value of `dotted` as built (typed); `given` for a table the config does not
    keep (another strategy's parameters)."""
    return flatten(to_dict(cfg)).get(dotted, given)


def _labels(keys: list[str]) -> dict[str, str]:
    """Short folder-name labels: `fed.num_clients` -> `num_clients`, `edge.name` -> `edge`."""
    short = {k: (k.split(".")[0] if k.endswith(".name") else k.split(".")[-1]) for k in keys}
    counts = {s: list(short.values()).count(s) for s in short.values()}
    return {k: (s if counts[s] == 1 else k.replace(".", "_")) for k, s in short.items()}


def _comparable(cfg: Any) -> dict[str, Any]:
    return strip_runtime(type(cfg), to_dict(cfg))


def _check_existing(point: Point, command: str) -> None:
    """A finished run folder must hold the run this point asks for, or resuming would mix runs."""
    saved_path = point.folder / "config.toml"
    if not point.done or not saved_path.is_file():
        return
    try:
        cls = CONFIG_CLASSES[command]  # keys the run predates: the values it ran with
        saved = build_config(cls, with_legacy(cls, read_toml(saved_path)), str(saved_path))
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
        try:
            data = merge(base, nest({**sweep.fixed, **overrides}, sweep.source))
        except MietError as exc:
            raise MietError(f"{exc} in {sweep.base}") from None
        desc = " ".join(f"{k}={_fmt(v)}" for k, v in overrides.items()) or "base config"
        where = f"{sweep.source} (point {i}: {desc})"
        try:
            cfg = build_config(cls, data, where)
            if check_data:
                job(sweep.command).planner(cfg)
        except MietError as exc:  # say which point, once
            raise MietError(str(exc) if where in str(exc) else f"{exc} [{where}]") from None
        given = {**sweep.fixed, **overrides}
        values = {k: _lookup(cfg, k, given.get(k)) for k in keys}
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
