"""Report plots of one run: learning curves per round (simulate) or per epoch (tune) and bytes
per round; the sweep figures are in `sweep_plots`. Axes from `miet_fed.plotting`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from miet_fed.plotting import bytes_ticks as _bytes_ticks
from miet_fed.plotting import figure as _figure
from miet_fed.report.tables import round_bytes

if TYPE_CHECKING:
    from miet_fed.report.document import Report

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


def _colors(keys: list[Any]) -> dict[Any, str]:
    return {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(keys)}


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
    for col, style, label in (  # fed.val_fraction: every round on validation, test at the end
        ("personal_val_acc", "o:", "personal, validation"),
        ("global_val_acc", "s:", "global model, validation"),
    ):
        if col in rounds and rounds[col].notna().any():
            r = rounds.dropna(subset=[col])
            ax.plot(r["round"], 100 * r[col], style, label=label)
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


def _has(df: pd.DataFrame, col: str) -> bool:
    return col in df and bool(df[col].notna().any())


def _epoch_curves(rep: Report, metrics: pd.DataFrame) -> None:
    """(e) one tune run: accuracy and loss per epoch on train and validation, and on test where
    the run recorded it (train.test_curve=true, or a run from before validation existed)."""
    fig, (ax, ax2) = _figure(width=10, ncols=2)
    shown = [p for p in ("train", "val", "test") if _has(metrics, f"{p}_acc")]
    styles = {"train": "o-", "val": "d-", "test": "s-"}
    for part in shown:
        ax.plot(metrics["epoch"], 100 * metrics[f"{part}_acc"], styles[part], label=part)
    from matplotlib.ticker import MaxNLocator

    for a in (ax, ax2):
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Accuracy per epoch")
    ax.legend()
    ax.grid(alpha=0.3)
    for part in shown:
        if f"{part}_loss" in metrics:
            ax2.plot(metrics["epoch"], metrics[f"{part}_loss"], styles[part], label=part)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("cross-entropy loss")
    ax2.set_title("Loss per epoch")
    ax2.legend()
    ax2.grid(alpha=0.3)
    rep.plot(
        fig,
        "accuracy_per_epoch.png",
        "Accuracy and loss per epoch",
        "Edge network training on one device: accuracy and loss after every epoch on the "
        + ", ".join({"val": "validation", "test": "test (diagnostic)"}.get(p, p) for p in shown)
        + " images.",
    )
