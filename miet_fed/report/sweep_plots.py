"""Report plots across the runs of a sweep: accuracy against bytes (the Pareto view), the
clients scaling plot, the per-client spread and the learning curves of every run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from miet_fed.plotting import bytes_axis as _bytes_axis
from miet_fed.plotting import figure as _figure
from miet_fed.plotting import place_labels
from miet_fed.report.plots import _colors
from miet_fed.report.tables import SOURCE_TEXT, _pareto, _read_csv, _run_labels, _unique

if TYPE_CHECKING:
    from miet_fed.jobs import Job
    from miet_fed.report.document import Report


def _pareto_plot(rep: Report, ok: pd.DataFrame, kind: Job, color: str | None) -> None:
    """(a) accuracy against total bytes, one point per run."""
    primary = kind.primary
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
        name = kind.primary_text.split()[0]
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
    ax.set_ylabel(kind.accuracy_axis)
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
        else kind.primary_text
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


def _clients_plot(rep: Report, ok: pd.DataFrame, kind: Job) -> None:
    """(b) accuracy and bytes against the number of clients, one line per strategy."""
    if not kind.federated or "num_clients" not in ok or ok["num_clients"].nunique() < 2:
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
    rep: Report, runs: pd.DataFrame | None, ok: pd.DataFrame, kind: Job, color: str | None
) -> None:
    """Learning curves of every run: accuracy per round (simulate) or validation accuracy per
    epoch (tune; test accuracy for runs from before validation existed)."""
    x, y = kind.step, kind.curve
    if runs is not None and (y not in runs or runs[y].isna().all()) and kind.primary in runs:
        y = kind.primary  # runs that recorded no validation but their test per epoch
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
