"""`miet-fed report`: markdown tables, CSV tables and PNG plots of a sweep or of one run.

The input is either a sweep folder (`summary.csv`, `runs.csv`, `runs/<run>/...`, as written by
`miet-fed sweep`) or a single run folder (`summary.json`, as written by `tune` or `simulate`).
Only the plots the data supports are drawn (e.g. the scaling plot needs several client counts);
`report.md` lists what was written and why anything was left out, so a reader never has to guess.

Bytes: a run's total comes from the communication ledger (`summary.json` `total_bytes`, or
`rounds.csv` `bytes_cum`) when the run has one; older runs fall back to what they did record
(parameter bytes plus the feature bytes the backbone actor served, or for `tune` the images sent
up plus one feature payload per image down), and every table and axis says which was used.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from miet_fed.report.document import OUTPUTS, Report, _single_run, _sweep, make_report
from miet_fed.report.tables import md_table, round_bytes, total_bytes
from miet_fed.units import human_bytes

__all__ = [
    "OUTPUTS",
    "Report",
    "_single_run",
    "_sweep",
    "human_bytes",
    "make_report",
    "md_table",
    "round_bytes",
    "total_bytes",
]

HELP = "report.md, CSV tables and PNG plots of a sweep folder or a single run folder"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", type=Path, help="a sweep folder (summary.csv) or a run folder")
    p.add_argument("--out", type=Path, help="where to write (default: DIR/report)")


def run(args: argparse.Namespace) -> int:
    path = make_report(args.dir, args.out)
    written = sorted(p.name for p in path.parent.iterdir() if p.suffix in (".png", ".csv"))
    print(f"report: {path}")
    print("files: " + ", ".join(written))
    return 0
