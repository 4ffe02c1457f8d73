"""The shared entry point of the study scripts in `simulations/`: a sweep config, shrunk for
`--quick`, with `--set` pairs on top, run (resumably) and reported."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from miet_fed.errors import MietError
from miet_fed.report import make_report
from miet_fed.sweep import Sweep, add_set, load_sweep
from miet_fed.sweep_run import run_sweep


def build(
    config: Path,
    quick: bool,
    pairs: list[str],
    quick_set: dict[str, Any],
    quick_grid: dict[str, list[Any]] | None = None,
    quick_points: list[dict[str, Any]] | None = None,
) -> Sweep:
    """The sweep of `config`, shrunk for --quick, with --set pairs on top."""
    sweep = load_sweep(config)
    root = config.resolve().parent.parent
    if sweep.base is not None and not sweep.base.is_absolute() and not sweep.base.is_file():
        sweep = replace(sweep, base=root / sweep.base)  # run from outside the checkout
    if quick:
        sweep = replace(
            sweep,
            name=f"{sweep.name}-quick",
            fixed={**sweep.fixed, **quick_set},
            grid={**sweep.grid, **(quick_grid or {})},
            points=sweep.points if quick_points is None else quick_points,
        )
    return add_set(sweep, pairs)


def main(
    prog: str,
    description: str,
    config: Path,
    quick_set: dict[str, Any],
    quick_grid: dict[str, list[Any]] | None = None,
    argv: list[str] | None = None,
    quick_points: list[dict[str, Any]] | None = None,
) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--quick", action="store_true", help="tiny fast variant (smoke test)")
    parser.add_argument("--out", type=Path, help="sweep folder (default: results/<name>)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        sweep = build(config, args.quick, args.set, quick_set, quick_grid, quick_points)
        out = args.out or Path("results") / sweep.name
        points, outcomes = run_sweep(sweep, out, quiet=args.quiet)
        report = make_report(out)
    except MietError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    failed = [p.slug for p in points if outcomes[p.index].status == "failed"]
    print(f"sweep: {out} ({len(points)} runs, {len(failed)} failed)")
    print(f"report: {report}")
    return 1 if failed else 0
