"""Summarise the devices sweep over seeds: mean and spread per (devices, partition), and a plot.

    .venv/bin/python simulations/sweep_clients.py      # runs the sweep (resumable)
    .venv/bin/python simulations/devices_summary.py    # this table and figure

Reads `results/sweep_clients` through the Python API (`miet_fed.load_runs`), prints a markdown
table (personal and global accuracy, mean and standard deviation over seeds, bytes per run,
seconds per round) and writes `results/figures/devices_sweep.png`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import pandas as pd  # noqa: E402

import miet_fed  # noqa: E402
from miet_fed.markdown import table  # noqa: E402


def summarise(sweep: Path) -> pd.DataFrame:
    runs = miet_fed.load_runs(sweep)
    s = runs.summary.copy()
    rounds = runs.rounds
    per_round = (
        rounds.dropna(subset=["elapsed_seconds"])
        .sort_values("round")
        .groupby("run")["elapsed_seconds"]
        .apply(lambda t: t.diff().iloc[2:].median())
        .rename("s_per_round")
    )
    s = s.join(per_round, on="run")
    keys = ["num_clients", "partition"]
    agg = s.groupby(keys).agg(
        seeds=("seed", "nunique"),
        personal_acc=("personal_acc", "mean"),
        personal_std=("personal_acc", "std"),
        global_acc=("global_acc", "mean"),
        global_std=("global_acc", "std"),
        total_bytes=("total_bytes", "mean"),
        param_bytes=("bytes_by_kind.params", "mean"),
        s_per_round=("s_per_round", "median"),
        ledger_equals_model=("ledger_equals_model", "all"),
    )
    return agg.reset_index()


def markdown(agg: pd.DataFrame) -> str:
    header = [
        "devices",
        "split",
        "seeds",
        "personal acc (mean ± sd)",
        "global acc (mean ± sd)",
        "total bytes",
        "of which parameters",
        "s/round",
        "ledger = model",
    ]
    rows = [
        [
            f"{r.num_clients:,}",
            r.partition,
            r.seeds,
            f"{100 * r.personal_acc:.1f} ± {100 * r.personal_std:.1f} %",
            f"{100 * r.global_acc:.1f} ± {100 * r.global_std:.1f} %",
            f"{r.total_bytes / 1e6:,.1f} MB",
            f"{r.param_bytes / 1e6:,.1f} MB",
            f"{r.s_per_round:.1f}",
            r.ledger_equals_model,
        ]
        for r in agg.itertuples()
    ]
    return table(header, rows)


def plot(agg: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, (acc, cost) = plt.subplots(1, 2, figsize=(10, 4))
    for split, marker in (("iid", "o"), ("dirichlet", "s")):
        part = agg[agg.partition == split].sort_values("num_clients")
        for col, std, style in (
            ("personal_acc", "personal_std", "-"),
            ("global_acc", "global_std", "--"),
        ):
            acc.errorbar(
                part.num_clients,
                100 * part[col],
                yerr=100 * part[std],
                marker=marker,
                linestyle=style,
                capsize=3,
                label=f"{col.split('_')[0]}, {split}",
            )
        cost.plot(part.num_clients, part.total_bytes / 1e6, marker=marker, label=split)
    for ax in (acc, cost):
        ax.set_xscale("log")
        ax.set_xlabel("edge devices sharing the pool")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    acc.set_ylabel("accuracy after the last round (%)")
    acc.set_title("FedAvg, 1 local epoch, mean ± sd over seeds")
    cost.set_ylabel("bytes per run (MB)")
    cost.set_title("all transfers (images, features, parameters, metrics)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sweep", type=Path, default=ROOT / "results" / "sweep_clients")
    p.add_argument(
        "--figure", type=Path, default=ROOT / "results" / "figures" / "devices_sweep.png"
    )
    args = p.parse_args(argv)
    try:
        agg = summarise(args.sweep)
    except miet_fed.MietError as exc:
        print(f"devices_summary: error: {exc}", file=sys.stderr)
        return 2
    print(markdown(agg))
    plot(agg, args.figure)
    print(f"figure: {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
