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
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from miet_fed.errors import MietError
from miet_fed.plotting import bytes_axis as _bytes_axis
from miet_fed.plotting import bytes_ticks as _bytes_ticks
from miet_fed.plotting import figure as _figure
from miet_fed.plotting import place_labels
from miet_fed.results import own_folder
from miet_fed.units import human_bytes

HELP = "report.md, CSV tables and PNG plots of a sweep folder or a single run folder"

LEDGER = "ledger"
SOURCE_TEXT = {LEDGER: "communication ledger: images, features, parameters, metrics"}
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
PALETTE = [
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]


# ---------------------------------------------------------------- bytes


def _num(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def total_bytes(summary: dict[str, Any], rounds: pd.DataFrame | None) -> tuple[float | None, str]:
    """(bytes, where they come from) for one run: the ledger if present, else a fallback."""
    if _num(summary.get("total_bytes")) is not None:
        return float(summary["total_bytes"]), LEDGER
    if rounds is not None and "bytes_cum" in rounds and rounds["bytes_cum"].notna().any():
        return float(rounds["bytes_cum"].max()), LEDGER
    if summary.get("command") == "simulate":
        params = 0.0
        if rounds is not None:
            for col in ("params_up_bytes", "params_down_bytes"):
                if col in rounds:
                    params += float(pd.to_numeric(rounds[col], errors="coerce").fillna(0).sum())
        served = _num(summary.get("bytes_served"))
        if served is None:
            return params, "parameters only (no ledger)"
        return params + served, "parameters + features served (no ledger)"
    per_image, raw = _num(summary.get("bytes_per_image")), _num(summary.get("raw_image_bytes"))
    n = (_num(summary.get("n_train")) or 0) + (_num(summary.get("n_test")) or 0)
    if per_image is None or not n:
        return None, "unknown"
    return (per_image + (raw or 0)) * n, "images up + features down once per image (no ledger)"


def round_bytes(rounds: pd.DataFrame) -> tuple[pd.DataFrame, str] | None:
    """Per-round uplink/downlink bytes (round, up, down, cum) and their source, or None."""
    if {"bytes_up", "bytes_down"} <= set(rounds.columns):
        up, down, source = rounds["bytes_up"], rounds["bytes_down"], "ledger: all kinds"
    elif {"params_up_bytes", "params_down_bytes"} <= set(rounds.columns):
        up, down = rounds["params_up_bytes"], rounds["params_down_bytes"]
        source = "parameters only (no ledger)"
    else:
        return None
    df = pd.DataFrame(
        {
            "round": rounds["round"],
            "up": pd.to_numeric(up, errors="coerce").fillna(0),
            "down": pd.to_numeric(down, errors="coerce").fillna(0),
        }
    )
    df["cum"] = rounds["bytes_cum"] if "bytes_cum" in rounds else (df["up"] + df["down"]).cumsum()
    return df, source


# ---------------------------------------------------------------- markdown


def _cell(col: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}" if abs(value) >= 10000 else str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if "acc" in col and "bytes" not in col and 0 <= v <= 1:
            return f"{100 * v:.1f} %"
        if v.is_integer() and abs(v) >= 1:
            return f"{int(v):,}" if abs(v) >= 10000 else str(int(v))
        return f"{v:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def md_table(df: pd.DataFrame) -> str:
    """A GitHub markdown table; accuracies as percentages, big integers with separators."""
    if df.empty:
        return "(empty)\n"
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(c, v) for c, v in zip(cols, row, strict=True)) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- plotting helpers


def _colors(keys: list[Any]) -> dict[Any, str]:
    return {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(keys)}


def _unique(values: pd.Series) -> list[Any]:
    return list(dict.fromkeys(values.dropna().tolist()))


# ---------------------------------------------------------------- the report


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


# ---------------------------------------------------------------- single run


def _read_csv(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.is_file() and path.stat().st_size > 1 else None


def _single_run(rep: Report, src: Path) -> None:
    summary = json.loads((src / "summary.json").read_text())
    command = summary.get("command", "?")
    rounds = _read_csv(src / "rounds.csv")
    total, source = total_bytes(summary, rounds if command == "simulate" else None)
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

    if command == "simulate" and rounds is not None:
        _round_curves(rep, rounds, summary)
        _client_box(rep, [(summary.get("strategy", "run"), src.name, src / "clients.csv")])
        ledger = _read_csv(src / "ledger.csv")
        if ledger is not None:
            rep.table(
                _order_kinds(_ledger_pivot(ledger, src.name)), "cost_by_kind.csv", "Bytes by kind"
            )
        else:
            rep.skip("bytes by kind", "the run has no ledger.csv")
    elif command == "tune":
        metrics = _read_csv(src / "metrics.csv")
        if metrics is not None and "epoch" in metrics:
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


def _flat(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in summary.items()}


def _round_curves(rep: Report, rounds: pd.DataFrame, summary: dict[str, Any]) -> None:
    """(e) one simulate run: accuracy per round and bytes per round."""
    fig, ax = _figure()
    drawn = False
    if "personal_acc" in rounds and rounds["personal_acc"].notna().any():
        r = rounds.dropna(subset=["personal_acc"])
        ax.plot(r["round"], 100 * r["personal_acc"], "o-", label="personal (mean over clients)")
        if "personal_acc_std" in r:
            std = 100 * r["personal_acc_std"].fillna(0)
            ax.fill_between(
                r["round"],
                (100 * r["personal_acc"] - std).clip(lower=0),
                (100 * r["personal_acc"] + std).clip(upper=100),
                alpha=0.2,
                label="personal ± 1 std across clients",
            )
        drawn = True
    if "global_acc" in rounds and rounds["global_acc"].notna().any():
        r = rounds.dropna(subset=["global_acc"])
        ax.plot(r["round"], 100 * r["global_acc"], "s--", label="global model (held-out test)")
        drawn = True
    if drawn:
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("round (0 = initial model)" if (rounds["round"] == 0).any() else "round")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(
            f"Accuracy per round: {summary.get('strategy', '')}, "
            f"{summary.get('num_clients', '?')} clients"
        )
        ax.legend()
        ax.grid(alpha=0.3)
        rep.plot(
            fig,
            "accuracy_per_round.png",
            "Accuracy per round",
            "Personal accuracy: each client's deployed model on its own test split, mean "
            "over the clients evaluated that round; global: the server model on the "
            "held-out test images (strategies with a global model).",
        )
    else:
        rep.skip("accuracy per round", "rounds.csv has no accuracy column")

    rb = round_bytes(rounds)
    if rb is None:
        rep.skip("bytes per round", "rounds.csv has no byte columns")
        return
    df, source = rb
    fig, ax = _figure()
    x = np.arange(len(df))
    ax.bar(x - 0.2, df["up"], width=0.4, label="uplink (clients → server)")
    ax.bar(x + 0.2, df["down"], width=0.4, label="downlink (server → clients)")
    ax.set_xticks(x, [str(r) for r in df["round"]])
    ax.set_xlabel("round")
    ax.set_ylabel("bytes per round")
    _bytes_ticks(ax)
    ax.set_title(f"Bytes per round ({source})")
    ax2 = ax.twinx()
    ax2.plot(x, df["cum"], "k.-", label="cumulative (right axis)")
    ax2.set_ylabel("cumulative bytes")
    ax2.set_ylim(bottom=0)
    _bytes_ticks(ax2)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper left")
    rep.plot(
        fig,
        "bytes_per_round.png",
        "Bytes per round",
        f"Bytes exchanged each round, up and down, and their running total ({source}).",
    )
    df.to_csv(rep.out / "bytes_per_round.csv", index=False)
    rep.tables.append(("bytes_per_round.csv", "bytes per round: up, down, cumulative"))


def _epoch_curves(rep: Report, metrics: pd.DataFrame) -> None:
    """(e) one tune run: accuracy and loss per epoch."""
    fig, (ax, ax2) = _figure(width=10, ncols=2)
    for col, style, label in (("train_acc", "o-", "train"), ("test_acc", "s-", "test")):
        if col in metrics:
            ax.plot(metrics["epoch"], 100 * metrics[col], style, label=label)
    from matplotlib.ticker import MaxNLocator

    for a in (ax, ax2):
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Accuracy per epoch")
    ax.legend()
    ax.grid(alpha=0.3)
    for col, style, label in (("train_loss", "o-", "train"), ("test_loss", "s-", "test")):
        if col in metrics:
            ax2.plot(metrics["epoch"], metrics[col], style, label=label)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("cross-entropy loss")
    ax2.set_title("Loss per epoch")
    ax2.legend()
    ax2.grid(alpha=0.3)
    rep.plot(
        fig,
        "accuracy_per_epoch.png",
        "Accuracy and loss per epoch",
        "Edge network training on one device: train and held-out test accuracy and loss "
        "after every epoch.",
    )


# ---------------------------------------------------------------- sweep


def _color_key(summary: pd.DataFrame, command: str) -> str | None:
    """What to color runs by: the strategy or gather that varies, else the first varied key."""
    order = ["strategy", "gather"] if command == "simulate" else ["gather", "strategy"]
    for col in order:
        if col in summary and summary[col].nunique() > 1:
            return col
    grid = [c for c in summary.columns if "." in c and summary[c].nunique() > 1]
    if grid:
        return grid[0]
    return next((c for c in order if c in summary), None)


def _short(col: str) -> str:
    """`fed.num_clients` -> `num_clients`; `edge.name` -> `edge` (as the sweep's folder names)."""
    if "." not in col:
        return col
    section, key = col.split(".", 1)
    return section if key == "name" else key


def _run_labels(summary: pd.DataFrame, color: str | None, compact: bool = False) -> pd.Series:
    """Per-run label from the varied grid values, without the one the color already shows.

    `compact` (annotations next to points) names only the values that differ from the most
    common one, so e.g. `dtype=int8` marks the one int8 run instead of repeating `k=12 ...`.
    """
    same = {color, f"fed.{color}", f"model.{color}"} if color else set()
    cols = [c for c in summary.columns if "." in c and c not in same and summary[c].nunique() > 1]
    if not cols:
        return summary["run"].astype(str)
    modes = {c: summary[c].mode().iloc[0] for c in cols}

    def label(row: pd.Series) -> str:
        items = [(c, v) for c, v in zip(cols, row, strict=True)]
        if compact:
            items = [(c, v) for c, v in items if v != modes[c]] or items
        return " ".join(f"{_short(c)}={v}" for c, v in items)

    return summary[cols].apply(label, axis=1)


def _pareto(x: pd.Series, y: pd.Series) -> pd.Series:
    """True for runs no other run beats on both fewer bytes and higher accuracy."""
    flags = pd.Series(False, index=x.index)
    best = -math.inf
    for i in sorted(x.dropna().index, key=lambda i: (x[i], -y[i])):
        if pd.notna(y[i]) and y[i] > best:
            flags[i], best = True, y[i]
    return flags


def _pareto_plot(rep: Report, ok: pd.DataFrame, command: str, color: str | None) -> None:
    """(a) accuracy against total bytes, one point per run."""
    primary = "test_acc" if command == "tune" else "personal_acc"
    if primary not in ok or ok["total_bytes"].isna().all() or ok[primary].isna().all():
        rep.skip("accuracy vs bytes", f"no runs with both {primary} and total bytes")
        return
    df = ok.dropna(subset=["total_bytes", primary]).copy()
    df["label"] = _run_labels(df, color, compact=True)
    groups = _unique(df[color]) if color else ["all runs"]
    colors = _colors(groups)
    fig, ax = _figure(width=8, height=5)
    has_global = "global_acc" in df and df["global_acc"].notna().any()
    for g in groups:
        part = df[df[color] == g] if color else df
        name = "personal" if command == "simulate" else "test"
        ax.scatter(
            part["total_bytes"],
            100 * part[primary],
            s=50,
            color=colors[g],
            label=f"{g} ({name})" if has_global else str(g),
            zorder=3,
        )
        if has_global:
            glob = part.dropna(subset=["global_acc"])
            if len(glob):
                ax.scatter(
                    glob["total_bytes"],
                    100 * glob["global_acc"],
                    s=50,
                    marker="s",
                    facecolors="none",
                    edgecolors=colors[g],
                    label=f"{g} (global)",
                    zorder=3,
                )
    df["pareto"] = _pareto(df["total_bytes"], df[primary])
    front = df[df["pareto"]].sort_values("total_bytes")
    if len(front) > 1:
        ax.step(
            front["total_bytes"],
            100 * front[primary],
            where="post",
            ls="--",
            color="grey",
            lw=1,
            label=f"Pareto front ({primary.split('_')[0]})",
            zorder=2,
        )
    scale = _bytes_axis(ax, df["total_bytes"])
    ax.margins(x=0.12, y=0.08)
    sources = (
        ", ".join(SOURCE_TEXT.get(x, x) for x in _unique(df["bytes_source"]))
        if "bytes_source" in df
        else "source unknown"
    )
    ax.set_xlabel(f"total bytes communicated per run ({scale})\n{sources}")
    ax.set_ylabel("test accuracy (%)" if command == "tune" else "final-round accuracy (%)")
    title = "Accuracy vs communication, one point per run"
    ax.set_title(title + (f", colored by {color}" if color else ""))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    unlabelled = 0
    if df["label"].nunique() > 1 and len(df) <= 16:
        unlabelled = place_labels(
            ax, [(r["total_bytes"], 100 * r[primary], r["label"]) for _, r in df.iterrows()]
        )
    what = (
        "personal accuracy (filled) and global accuracy (hollow squares)"
        if has_global
        else ("personal accuracy" if command == "simulate" else "test accuracy")
    )
    rep.plot(
        fig,
        "pareto.png",
        "Accuracy vs total bytes",
        f"One point per run: {what} against the run's total bytes ({sources}). The dashed "
        "line joins the runs no other run beats with fewer bytes and higher accuracy."
        + (
            f" {unlabelled} point label(s) left out where they would overlap: see pareto.csv."
            if unlabelled
            else ""
        ),
    )
    cols = ["run", *[c for c in df.columns if "." in c], "total_bytes", primary]
    cols += ["global_acc"] if has_global else []
    rep.table(df[cols + ["pareto"]], "pareto.csv", "Accuracy vs bytes (Pareto view)")


def _clients_plot(rep: Report, ok: pd.DataFrame, command: str) -> None:
    """(b) accuracy and bytes against the number of clients, one line per strategy."""
    if command != "simulate" or "num_clients" not in ok or ok["num_clients"].nunique() < 2:
        rep.skip("accuracy and bytes vs number of clients", "fed.num_clients does not vary")
        return
    strat = "strategy" if "strategy" in ok else None
    keys = [strat, "num_clients"] if strat else ["num_clients"]
    agg = {c: (c, "mean") for c in ("personal_acc", "global_acc", "total_bytes") if c in ok}
    agg["runs"] = ("run", "count")
    by = ok.groupby(keys, sort=True).agg(**agg).reset_index()
    groups = _unique(by[strat]) if strat else ["all runs"]
    colors = _colors(groups)
    fig, (ax, ax2) = _figure(width=11, height=4.5, ncols=2)
    for g in groups:
        part = by[by[strat] == g] if strat else by
        if "personal_acc" in part:
            ax.plot(
                part["num_clients"],
                100 * part["personal_acc"],
                "o-",
                color=colors[g],
                label=f"{g} personal",
            )
        if "global_acc" in part and part["global_acc"].notna().any():
            ax.plot(
                part["num_clients"],
                100 * part["global_acc"],
                "s--",
                color=colors[g],
                label=f"{g} global",
            )
        ax2.plot(part["num_clients"], part["total_bytes"], "o-", color=colors[g], label=str(g))
    for a in (ax, ax2):
        if by["num_clients"].max() >= 10 * by["num_clients"].min():
            a.set_xscale("log")
        counts = sorted(by["num_clients"].unique())
        a.set_xticks(counts, [str(int(c)) for c in counts])
        a.minorticks_off()
        a.set_xlabel(f"number of clients (fed.num_clients, {a.get_xscale()} scale)")
        a.grid(alpha=0.3, which="both")
        a.legend(fontsize=8)
    ax.set_ylabel("final accuracy (%)")
    ax.set_title("Accuracy vs number of clients")
    scale = _bytes_axis(ax2, by["total_bytes"], axis="y")
    ax2.set_ylabel(f"total bytes per run ({scale})")
    ax2.set_title("Communication vs number of clients")
    rep.plot(
        fig,
        "vs_clients.png",
        "Accuracy and bytes vs number of clients",
        "Final-round accuracy (mean over clients evaluated) and total bytes of each run, "
        "one line per strategy; several seeds are averaged.",
    )
    rep.table(by, "by_clients.csv", "By number of clients (mean over seeds)")


def _client_box(rep: Report, runs: list[tuple[str, str, Path]]) -> None:
    """(c) per-client personal accuracy at the final round, one box per run."""
    frames, boxes = [], []
    for group, label, path in runs:
        clients = _read_csv(path)
        if clients is None or "personal_acc" not in clients:
            continue
        ev = clients.dropna(subset=["personal_acc"])
        if ev.empty:
            continue
        final = ev[ev["round"] == ev["round"].max()]
        frames.append(
            final.assign(run=label, group=group)[
                ["run", "group", "round", "client", "personal_acc"]
            ]
        )
        boxes.append((group, label, 100 * final["personal_acc"].to_numpy()))
    if not boxes:
        rep.skip("per-client accuracy spread", "no clients.csv with personal accuracy")
        return
    data = pd.concat(frames, ignore_index=True)
    groups = _unique(data["group"])
    colors = _colors(groups)
    fig, ax = _figure(width=max(6.0, 1.1 * len(boxes) + 2), height=4.8)
    art = ax.boxplot([b[2] for b in boxes], patch_artist=True, showmeans=True)
    ticks = [
        f"{g}\n{lbl}\n({len(v)} evaluated)" if lbl != g else f"{g}\n({len(v)} evaluated)"
        for g, lbl, v in boxes
    ]
    ax.set_xticks(range(1, len(boxes) + 1), ticks, fontsize=8)
    for patch, (g, _, _) in zip(art["boxes"], boxes, strict=True):
        patch.set_facecolor(colors[g])
        patch.set_alpha(0.6)
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color=colors[g], alpha=0.6, label=str(g)) for g in groups], fontsize=8)
    ax.set_ylabel("personal accuracy per client (%)")
    ax.set_xlabel("run")
    ax.set_title("Per-client personal accuracy at the final round")
    ax.grid(alpha=0.3, axis="y")
    rep.plot(
        fig,
        "client_spread.png",
        "Per-client accuracy spread",
        "Each box: the clients evaluated in the run's final round (box = quartiles, line = "
        "median, triangle = mean, whiskers = 1.5 IQR).",
    )
    stats = (
        data.groupby(["run", "group"], sort=False)["personal_acc"]
        .describe(percentiles=[0.1, 0.5, 0.9])
        .reset_index()
    )
    stats = stats.rename(
        columns={
            "count": "clients",
            "10%": "p10",
            "50%": "median",
            "90%": "p90",
            "group": "strategy",
        }
    )
    stats.columns = [c if c in ("run", "strategy", "clients") else f"{c}_acc" for c in stats]
    rep.table(stats, "client_spread.csv", "Per-client personal accuracy at the final round")
    data.to_csv(rep.out / "clients_final.csv", index=False)
    rep.tables.append(("clients_final.csv", "every client's final-round personal accuracy"))


def _sweep_curves(
    rep: Report, runs: pd.DataFrame | None, ok: pd.DataFrame, command: str, color: str | None
) -> None:
    """Learning curves of every run: accuracy per round (simulate) or per epoch (tune)."""
    x, y = ("round", "personal_acc") if command == "simulate" else ("epoch", "test_acc")
    if runs is None or x not in runs or y not in runs or runs[y].isna().all():
        rep.skip("learning curves", f"runs.csv has no {y} per {x}")
        return
    labels = dict(zip(ok["run"], _run_labels(ok, color), strict=True))
    groups = dict(zip(ok["run"], ok[color], strict=True)) if color else {}
    colors = _colors(_unique(ok[color])) if color else {}
    styles = ["-", "--", ":", "-."]
    fig, ax = _figure(width=8, height=5)
    seen: dict[Any, int] = {}
    for run, part in runs.dropna(subset=[y]).groupby("run", sort=False):
        g = groups.get(run)
        i = seen[g] = seen.get(g, -1) + 1
        name = f"{g}: {labels.get(run, run)}" if g is not None else labels.get(run, run)
        ax.plot(
            part[x],
            100 * part[y],
            styles[i % 4],
            marker=".",
            color=colors.get(g),
            label=name if len(ok) <= 16 else None,
        )
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(x)
    ax.set_ylabel(f"{y.replace('_', ' ')} (%)")
    ax.set_title(f"{y.replace('_', ' ').capitalize()} per {x}, one line per run")
    ax.grid(alpha=0.3)
    if len(ok) <= 16:
        ax.legend(fontsize=7)
    rep.plot(
        fig,
        "curves.png",
        f"Accuracy per {x}",
        f"{y} of every run after each {x}" + (", colored by " + color if color else "") + ".",
    )


def _ledger_pivot(ledger: pd.DataFrame, run: str) -> pd.DataFrame:
    cols = [c for c in ("direction", "kind") if c in ledger]
    if not cols or "bytes" not in ledger:
        return pd.DataFrame({"run": [run], "bytes": [ledger.get("bytes", pd.Series()).sum()]})
    sums = ledger.groupby(cols)["bytes"].sum()
    row = {
        "run": run,
        **{"_".join(map(str, k)) if isinstance(k, tuple) else str(k): v for k, v in sums.items()},
    }
    row["total"] = float(ledger["bytes"].sum())
    return pd.DataFrame([row])


def _order_kinds(df: pd.DataFrame) -> pd.DataFrame:
    """run, downlink kinds, uplink kinds, total: the same column order for every run set."""
    middle = sorted(c for c in df.columns if c not in ("run", "total"))
    return df[["run", *middle, *(["total"] if "total" in df else [])]]


def _tune_cost(rep: Report, ok: pd.DataFrame) -> None:
    """(d) bytes per image as measured, next to what `miet_fed.comm.cost` predicts."""
    from miet_fed.comm.cost import encoded_bytes

    rows = []
    for _, r in ok.iterrows():
        predicted = None
        try:
            shape = tuple(json.loads(r["payload_shape"]))
            predicted = encoded_bytes(shape, str(r["dtype"]))
        except (KeyError, TypeError, ValueError, MietError):
            pass
        rows.append(
            {
                "run": r["run"],
                "gather": r.get("gather"),
                "k": r.get("k"),
                "dtype": r.get("dtype"),
                "edge": r.get("edge"),
                "payload_shape": r.get("payload_shape"),
                "bytes_per_image": r.get("bytes_per_image"),
                "predicted_bytes_per_image": predicted,
                "raw_image_bytes": r.get("raw_image_bytes"),
                "trainable_params": r.get("trainable_params"),
                "total_bytes": r.get("total_bytes"),
                "bytes_source": r.get("bytes_source"),
            }
        )
    rep.table(
        pd.DataFrame(rows),
        "cost_per_image.csv",
        "Cost per image",
        "Downlink bytes per image as measured by the run, and as predicted by "
        "`miet_fed.comm.cost.encoded_bytes` from the payload shape and dtype.",
    )


def _sim_cost(rep: Report, ok: pd.DataFrame, src: Path) -> None:
    """(d) simulate: bytes by kind from each run's ledger.csv, else the recorded byte fields."""
    frames = []
    for run in ok["run"]:
        ledger = _read_csv(src / "runs" / str(run) / "ledger.csv")
        if ledger is not None:
            frames.append(_ledger_pivot(ledger, str(run)))
    if frames:
        rep.table(
            _order_kinds(pd.concat(frames, ignore_index=True)),
            "cost_by_kind.csv",
            "Bytes by direction and kind (from each run's ledger.csv)",
        )
        return
    cols = [
        c
        for c in (
            "run",
            "strategy",
            "num_clients",
            "clients_per_round",
            "rounds",
            "bytes_served",
            "total_bytes",
            "bytes_source",
        )
        if c in ok
    ]
    rep.table(
        ok[cols],
        "cost_per_run.csv",
        "Communication per run",
        "No ledger.csv in these runs: totals are the recorded parameter bytes plus the "
        "feature bytes the backbone actor served.",
    )


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

    metrics = (
        ["test_acc", "bytes_per_image", "total_bytes", "trainable_params", "train_seconds"]
        if command == "tune"
        else ["personal_acc", "global_acc", "total_bytes", "failures", "wall_seconds"]
    )
    cols = ["run", *grid, *[m for m in metrics if m in summary], "error"]
    table = summary[cols].copy()
    table["error"] = table["error"].astype(object).where(table["error"].notna(), "")
    rep.sections.append("## Runs\n")
    rep.table(table, "summary_table.csv", "One row per run")
    rep.sections.append("## Plots and tables\n")
    if ok.empty:
        rep.skip("all plots", "no run of the sweep finished")
        return
    ok["total_bytes"] = pd.to_numeric(ok.get("total_bytes"), errors="coerce")
    color = _color_key(ok, command)
    _pareto_plot(rep, ok, command, color)
    _clients_plot(rep, ok, command)
    if command == "simulate":
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
    _sweep_curves(rep, runs, ok, command, color)
    for extra in sorted(src.glob("cost*.csv")):
        shutil.copyfile(extra, rep.out / extra.name)
        rep.table(
            pd.read_csv(extra), extra.name, f"Cost table from the sweep folder ({extra.name})"
        )
    if command == "tune":
        _tune_cost(rep, ok)
    else:
        _sim_cost(rep, ok, src)


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


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", type=Path, help="a sweep folder (summary.csv) or a run folder")
    p.add_argument("--out", type=Path, help="where to write (default: DIR/report)")


def run(args: argparse.Namespace) -> int:
    path = make_report(args.dir, args.out)
    written = sorted(p.name for p in path.parent.iterdir() if p.suffix in (".png", ".csv"))
    print(f"report: {path}")
    print("files: " + ", ".join(written))
    return 0
