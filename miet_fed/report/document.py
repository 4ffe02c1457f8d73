"""The report document: collects sections, plots and tables, writes report.md; the single-run
and sweep pages choose what the data supports."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from miet_fed.errors import MietError
from miet_fed.jobs import JOBS
from miet_fed.report.plots import _epoch_curves, _round_curves
from miet_fed.report.sweep_plots import _client_box, _clients_plot, _pareto_plot, _sweep_curves
from miet_fed.report.tables import (
    SOURCE_TEXT,
    _cell,
    _color_key,
    _flat,
    _ledger_pivot,
    _order_kinds,
    _read_csv,
    _run_labels,
    _sim_cost,
    _tune_cost,
    _unique,
    md_table,
    over_seeds,
    total_bytes,
)
from miet_fed.results import own_folder
from miet_fed.units import human_bytes

DPI = 120
#: Every file a report may write (removed first, so the folder shows this report only).


OUTPUTS = (
    "report.md",
    "pareto.png",
    "vs_clients.png",
    "client_spread.png",
    "curves.png",
    "accuracy_per_round.png",
    "bytes_per_round.png",
    "accuracy_per_epoch.png",
    "summary_table.csv",
    "per_task.csv",
    "over_seeds.csv",
    "pareto.csv",
    "by_clients.csv",
    "client_spread.csv",
    "clients_final.csv",
    "bytes_per_round.csv",
    "cost_by_kind.csv",
    "cost_per_image.csv",
    "cost_per_run.csv",
)
#: Colors in a fixed order so the same strategy keeps its color within a report.


@dataclass
class Report:
    """Collects sections and the list of files written, then writes report.md."""

    src: Path
    out: Path
    title: str
    intro: list[str] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)
    plots: list[tuple[str, str]] = field(default_factory=list)
    not_plotted: list[tuple[str, str]] = field(default_factory=list)
    tables: list[tuple[str, str]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)  # name -> Figure, for checks

    def plot(self, fig: Any, name: str, title: str, caption: str) -> None:
        fig.savefig(self.out / name, dpi=DPI)
        self.figures[name] = fig
        self.plots.append((name, title))
        self.sections.append(f"### {title}\n\n![{title}]({name})\n\n{caption}\n")

    def skip(self, what: str, why: str) -> None:
        self.not_plotted.append((what, why))

    def table(self, df: pd.DataFrame, name: str, title: str, note: str = "", md: bool = True):
        df.to_csv(self.out / name, index=False)
        self.tables.append((name, title))
        if md:
            body = f"### {title}\n\n" + (f"{note}\n\n" if note else "") + md_table(df)
            self.sections.append(body + f"\n(CSV: `{name}`)\n")

    def write(self) -> Path:
        parts = [f"# {self.title}\n", *self.intro, "", *self.sections]
        parts.append("## Files\n")
        parts.append("Plots written:\n")
        parts += [f"- `{n}`: {t}" for n, t in self.plots] or ["- none"]
        parts.append("\nPlots not written:\n")
        parts += [f"- {w}: {why}" for w, why in self.not_plotted] or ["- none"]
        parts.append("\nCSV tables:\n")
        parts += [f"- `{n}`: {t}" for n, t in self.tables] or ["- none"]
        path = self.out / "report.md"
        path.write_text("\n".join(parts) + "\n")
        return path


def _single_run(rep: Report, src: Path) -> None:
    summary = json.loads((src / "summary.json").read_text())
    command = summary.get("command", "?")
    kind = JOBS.get(command)
    rounds = _read_csv(src / "rounds.csv")
    total, source = total_bytes(summary, rounds if kind and kind.federated else None)
    rep.intro.append(f"Single `{command}` run: `{src}`.\n")
    keys = [
        k
        for k in summary
        if not isinstance(summary[k], (list, dict)) and k not in ("out", "total_bytes")
    ]
    info = pd.DataFrame(
        {
            "field": keys + ["total_bytes", "bytes_source"],
            "value": [summary[k] for k in keys] + [human_bytes(total), source],
        }
    )
    info["value"] = [_cell(f, v) for f, v in zip(info["field"], info["value"], strict=True)]
    rep.table(info, "summary_table.csv", "Run summary")
    if isinstance(summary.get("per_task"), dict):  # a multi-task run ([[data.tasks]])
        per_task = pd.DataFrame.from_dict(summary["per_task"], orient="index")
        rep.table(per_task.rename_axis("task").reset_index(), "per_task.csv", "Each task")

    if kind is not None and kind.federated and rounds is not None:
        _round_curves(rep, rounds, summary)
        _client_box(rep, [(summary.get("strategy", "run"), src.name, src / "clients.csv")])
        ledger = _read_csv(src / "ledger.csv")
        if ledger is not None:
            rep.table(
                _order_kinds(_ledger_pivot(ledger, src.name)), "cost_by_kind.csv", "Bytes by kind"
            )
        else:
            rep.skip("bytes by kind", "the run has no ledger.csv")
    elif kind is not None and not kind.federated:
        metrics = _read_csv(src / kind.rows_file)
        if metrics is not None and "task" in metrics:
            rep.skip("accuracy per epoch", "a multi-task tune: see each task's log in tasks/")
        elif metrics is not None and "epoch" in metrics:
            _epoch_curves(rep, metrics)
        else:
            rep.skip("accuracy per epoch", "no metrics.csv")
        rep.skip(
            "bytes per round",
            "tune is one device without rounds: each image's payload is sent once (see summary)",
        )
        _tune_cost(
            rep,
            pd.DataFrame(
                [{"run": src.name, **_flat(summary), "total_bytes": total, "bytes_source": source}]
            ),
        )
    else:
        rep.skip("curves", "the run folder has neither rounds.csv nor metrics.csv")


def _sweep(rep: Report, src: Path) -> None:
    summary = pd.read_csv(src / "summary.csv")
    runs = _read_csv(src / "runs.csv")
    meta_path = src / "sweep.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if "error" not in summary:
        summary["error"] = np.nan
    ok = summary[summary["command"].notna()].copy() if "command" in summary else summary.iloc[:0]
    failed = summary[summary["error"].notna() & (summary["error"].astype(str) != "")]
    command = meta.get("command") or (ok["command"].iloc[0] if len(ok) else "?")
    grid = [c for c in summary.columns if "." in c]
    rep.intro.append(
        f"Sweep `{meta.get('name', src.name)}` in `{src}`: {len(summary)} `{command}` runs "
        f"({len(ok)} with results, {len(failed)} failed), varying "
        + (", ".join(f"`{c}`" for c in grid) or "nothing")
        + "."
    )
    if meta.get("description"):
        rep.intro.append(f"\n{meta['description']}")
    if len(ok) and "bytes_source" in ok:
        sources = [SOURCE_TEXT.get(s, s) for s in _unique(ok["bytes_source"])]
        rep.intro.append("\nBytes: " + "; ".join(sources) + ".")

    kind = JOBS.get(command, JOBS["simulate"])
    metrics = kind.sweep_metrics
    cols = ["run", *grid, *[m for m in metrics if m in summary], "error"]
    table = summary[cols].copy()
    table["error"] = table["error"].astype(object).where(table["error"].notna(), "")
    rep.sections.append("## Runs\n")
    rep.table(table, "summary_table.csv", "One row per run")
    seeds = over_seeds(ok, [m for m in metrics if "acc" in m])
    if seeds is not None:  # several seeds ran
        rep.table(
            seeds,
            "over_seeds.csv",
            "Mean and spread over seeds",
            "Per setting: mean and sample standard deviation (ddof=1) over its seeds.",
        )
    rep.sections.append("## Plots and tables\n")
    if ok.empty:
        rep.skip("all plots", "no run of the sweep finished")
        return
    ok["total_bytes"] = pd.to_numeric(ok.get("total_bytes"), errors="coerce")
    color = _color_key(ok, kind)
    _pareto_plot(rep, ok, kind, color)
    _clients_plot(rep, ok, kind)
    if kind.federated:
        labels = _run_labels(ok, "strategy")
        group = ok["strategy"] if "strategy" in ok else ok["run"]
        _client_box(
            rep,
            [
                (g, lbl, src / "runs" / str(r) / "clients.csv")
                for g, lbl, r in zip(group, labels, ok["run"], strict=True)
            ],
        )
    else:
        rep.skip("per-client accuracy spread", "tune runs have a single device")
    _sweep_curves(rep, runs, ok, kind, color)
    for extra in sorted(src.glob("cost*.csv")):
        shutil.copyfile(extra, rep.out / extra.name)
        rep.table(
            pd.read_csv(extra), extra.name, f"Cost table from the sweep folder ({extra.name})"
        )
    if kind.federated:
        _sim_cost(rep, ok, src)
    else:
        _tune_cost(rep, ok)


def make_report(src: Path, out: Path | None = None) -> Path:
    """Write the report of a sweep or run folder; returns the path of report.md."""
    src = Path(src)
    if not src.is_dir():
        raise MietError(f"report: {src} is not a folder (give a sweep or run folder)")
    is_sweep = (src / "summary.csv").is_file()
    if not is_sweep and not (src / "summary.json").is_file():
        raise MietError(
            f"report: {src} has neither summary.csv (a sweep folder) nor summary.json (a run "
            "folder); give the folder `miet-fed sweep`, `tune` or `simulate` wrote"
        )
    out = Path(out) if out is not None else src / "report"
    own_folder(out, "report")  # a folder of the user's is refused, not overwritten
    for name in OUTPUTS:  # a plot the data no longer supports must not linger from a past report
        (out / name).unlink(missing_ok=True)
    rep = Report(src=src, out=out, title=f"Report: {src.name}")
    if is_sweep:
        _sweep(rep, src)
    else:
        _single_run(rep, src)
    return rep.write()
