"""The harness: `python -m benchmarks [--only NAME[,NAME]] [--size quick|default|large]
[--out DIR] [--threads N]`.

Runs the selected benchmarks in order, prints one report per benchmark and a summary table
(benchmark, metric, value, target, met?), and writes `<out>/benchmarks.json` (every figure plus
machine facts) and `<out>/benchmarks.md` (the same tables, ready to paste into BENCHMARKS.md).
Exits 1 if a benchmark failed to run (a missed target is reported, not an error).

A benchmark is one module of this package, registered in `BENCHMARKS`, exposing
`DESCRIPTION: str`, `SIZES: dict` and `run(size: str, work: Path) -> Report`. It measures both
sides of a comparison in the same run and reports their ratio, so a busy machine still gives a
stable answer.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.machine import THREADS_ENV, apply_threads, load_average, machine_info
from benchmarks.report import Report, md_table, report_markdown, summary_rows

#: name -> module, in the order they run.
BENCHMARKS: dict[str, str] = {
    "backbone_service": "benchmarks.backbone_service",
    "cache": "benchmarks.cache",
    "sim_vs_serial": "benchmarks.sim_vs_serial",
    "scaling": "benchmarks.scaling",
    "cohorts": "benchmarks.cohorts",
    "startup": "benchmarks.startup",
    "edge_resources": "benchmarks.edge_resources",
    "checkpoint": "benchmarks.checkpoint",
}
SIZES = ("quick", "default", "large")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks", description="Runs miet_fed's performance benchmarks."
    )
    p.add_argument(
        "--only",
        default="",
        help=f"comma-separated benchmarks to run (default all: {', '.join(BENCHMARKS)})",
    )
    p.add_argument(
        "--size",
        choices=SIZES,
        default="default",
        help="quick: seconds each (smoke test); default: a few minutes in all; large: longer runs",
    )
    p.add_argument("--out", default="results/benchmarks", help="folder for the json and md")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads in the benchmark processes (default: torch's own choice); "
        "Ray workers of the simulations keep Ray's setting",
    )
    args = p.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        p.error(f"unknown benchmark(s) {', '.join(unknown)}; valid: {', '.join(BENCHMARKS)}")
    args.names = names
    return args


def run_one(name: str, size: str, work: Path) -> Report:
    module = importlib.import_module(BENCHMARKS[name])
    t0 = time.perf_counter()
    try:
        rep = module.run(size, work)
    except Exception:  # noqa: BLE001 - one failing benchmark must not hide the others
        rep = Report(name, module.DESCRIPTION, error=traceback.format_exc(limit=8).strip())
    rep.seconds = time.perf_counter() - t0
    return rep


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        os.environ[THREADS_ENV] = str(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    machine = machine_info()
    machine["torch_threads"] = apply_threads()
    reports: dict[str, Report] = {}
    work_root = Path(tempfile.mkdtemp(prefix="miet-bench-"))
    try:
        for name in args.names:
            print(f"== {name} ({args.size}) ...", file=sys.stderr, flush=True)
            work = work_root / name
            work.mkdir()
            rep = run_one(name, args.size, work)
            reports[name] = rep
            print(report_markdown(rep, args.size), flush=True)
    finally:
        shutil.rmtree(work_root, ignore_errors=True)
    machine["load_average_end"] = load_average()
    summary = summary_rows(reports)
    print("## Summary\n\n" + md_table(summary), flush=True)

    data = {
        "command": "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:]),
        "size": args.size,
        "started_utc": started.isoformat(timespec="seconds"),
        "seconds": round((datetime.now(UTC) - started).total_seconds(), 1),
        "machine": machine,
        "summary": summary,
        "benchmarks": {name: rep.to_dict() for name, rep in reports.items()},
    }
    (out / "benchmarks.json").write_text(json.dumps(data, indent=2, default=float) + "\n")
    m = machine
    header = [
        f"Measured {data['started_utc']} with `{data['command']}` ({data['seconds']:.0f} s).",
        f"Machine: {m['cpus_usable']} usable CPUs ({m['cpu_model']}), "
        f"{m['memory_total_gib']} GiB, {m['platform']}, Python {m['python']}, "
        f"torch {m['torch']} ({m['torch_threads']} threads), timm {m['timm']}, "
        f"flwr {m['flwr']}, ray {m['ray']}; "
        f"load average at start {m['load_average_1_5_15']}, at end {m['load_average_end']}.",
    ]
    md = ["## Summary", "", *header, "", md_table(summary), ""]
    md += [report_markdown(rep, args.size) for rep in reports.values()]
    (out / "benchmarks.md").write_text("\n".join(md))
    print(f"\nwrote {out / 'benchmarks.json'} and {out / 'benchmarks.md'}", file=sys.stderr)
    return 1 if any(rep.error for rep in reports.values()) else 0
