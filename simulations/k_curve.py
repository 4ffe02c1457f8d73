"""Accuracy against k (how many backbone blocks Gather* sums), LAE against its linear head alone.

    .venv/bin/miet-fed sweep configs/sweep_k.toml     # 42 tune runs (7 k x 2 heads x 3 seeds)
    .venv/bin/python simulations/k_curve.py            # table (markdown) and figure

Reads results/sweep_k/summary.csv (or --sweep DIR); writes k_curve.csv (mean and sample standard
deviation over seeds per k and head), prints the markdown table and saves the plot
(results/figures/k_curve.png by default).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

HEADS = {0: "linear head (edge.blocks=0)", 2: "LAE (2 low-rank attention blocks)"}


def summarise(summary: pd.DataFrame) -> pd.DataFrame:
    """Per (k, blocks): test and validation accuracy over seeds."""
    ok = summary[summary["error"].isna()] if "error" in summary else summary
    grouped = ok.groupby(["k", "edge.blocks"])
    out = grouped["test_acc"].agg(["mean", "std", "count"]).add_prefix("test_")
    out["val_mean"] = grouped["val_acc"].mean()
    out["seeds"] = grouped["test_acc"].apply(lambda s: ", ".join(f"{100 * v:.1f}" for v in s))
    out["trainable_params"] = grouped["trainable_params"].first()
    return out.reset_index()


def markdown(table: pd.DataFrame) -> str:
    lines = [
        "| k | head | test acc per seed (%) | mean ± sd | val acc mean | trainable params |",
        "|---:|---|---|---:|---:|---:|",
    ]
    for row in table.itertuples():
        lines.append(
            f"| {row.k} | {HEADS.get(row._2, row._2)} | {row.seeds} | "
            f"**{100 * row.test_mean:.1f} ± {100 * row.test_std:.1f} %** | "
            f"{100 * row.val_mean:.1f} % | {row.trainable_params:,} |"
        )
    return "\n".join(lines)


def plot(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for blocks, part in table.groupby("edge.blocks"):
        ax.errorbar(
            part["k"],
            100 * part["test_mean"],
            yerr=100 * part["test_std"],
            marker="o",
            capsize=3,
            label=HEADS.get(blocks, f"{blocks} blocks"),
        )
    ax.set_xlabel("k: Gather* sums z_0 .. z_k")
    ax.set_ylabel("test accuracy (%), mean ± sd of 3 seeds")
    ax.set_xticks(sorted(table["k"].unique()))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", type=Path, default=Path("results/sweep_k"))
    parser.add_argument("--figure", type=Path, default=Path("results/figures/k_curve.png"))
    args = parser.parse_args(argv)
    source = args.sweep / "summary.csv"
    if not source.is_file():
        print(f"k_curve: error: no {source}; run the sweep first", file=sys.stderr)
        return 2
    table = summarise(pd.read_csv(source))
    table.to_csv(args.sweep / "k_curve.csv", index=False)
    print(markdown(table))
    plot(table, args.figure)
    print(f"wrote {args.sweep / 'k_curve.csv'} and {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
