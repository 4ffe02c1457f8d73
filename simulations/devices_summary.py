"""Summarise the devices sweep over seeds: mean and spread per (devices, partition), and a plot.

    .venv/bin/python simulations/sweep_clients.py      # runs the sweep (resumable)
    .venv/bin/python simulations/devices_summary.py    # this table and figure

Reads `results/sweep_clients` through the Python API (`miet_fed.load_runs`), prints a markdown
table (personal and global accuracy at the end of each run, mean and standard deviation over
seeds; how much they still rose at the end; bytes per run; seconds per round) and writes
`results/figures/devices_sweep.png` (accuracy and bytes against devices, and the curves).
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

#: Rounds averaged for a run's end accuracy: one round's accuracy on a sampled fifth of the
#: devices (and even on the 500 global test images) swings by a few points from round to round.
LAST = 10


def per_run(summary: pd.DataFrame, rounds: pd.DataFrame) -> pd.DataFrame:
    """One row per run: its end accuracy (mean of the last LAST rounds), its late gain (that
    mean minus the mean of the LAST rounds before them: still rising if clearly positive), and
    its median seconds per round (rounds 3..R)."""
    r = rounds.dropna(subset=["elapsed_seconds"]).sort_values(["run", "round"])
    out = []
    for run, g in r.groupby("run", sort=False):
        end, before = g.iloc[-LAST:], g.iloc[-2 * LAST : -LAST]
        out.append(
            {
                "run": run,
                "personal_end": end.personal_acc.mean(),
                "global_end": end.global_acc.mean(),
                "late_gain": end.global_acc.mean() - before.global_acc.mean(),
                "s_per_round": g.elapsed_seconds.diff().iloc[2:].median(),
            }
        )
    return summary.merge(pd.DataFrame(out), on="run")


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and spread over seeds per (devices, partition)."""
    keys = ["num_clients", "partition"]
    agg = runs.groupby(keys).agg(
        seeds=("seed", "nunique"),
        rounds=("rounds", "max"),
        trained=("clients_per_round", "max"),
        personal_acc=("personal_end", "mean"),
        personal_std=("personal_end", "std"),
        global_acc=("global_end", "mean"),
        global_std=("global_end", "std"),
        late_gain=("late_gain", "mean"),
        total_bytes=("total_bytes", "mean"),
        param_bytes=("bytes_by_kind.params", "mean"),
        s_per_round=("s_per_round", "median"),
        ledger_equals_model=("ledger_equals_model", "all"),
    )
    return agg.reset_index()


def summarise(sweep: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per (devices, split) over seeds, the tidy per-round frame) of a finished sweep."""
    runs = miet_fed.load_runs(sweep)
    return aggregate(per_run(runs.summary, runs.rounds)), runs.rounds


def markdown(agg: pd.DataFrame) -> str:
    header = [
        "devices",
        "split",
        "trained/round",
        "rounds",
        "seeds",
        f"personal acc, last {LAST} rounds (mean ± sd)",
        f"global acc, last {LAST} rounds (mean ± sd)",
        f"gain, last {LAST} rounds vs the {LAST} before",
        "total bytes",
        "of which parameters",
        "s/round",
        "ledger = model",
    ]
    rows = [
        [
            f"{r.num_clients:,}",
            r.partition,
            f"{r.trained:,}",
            r.rounds,
            r.seeds,
            f"{100 * r.personal_acc:.1f} ± {100 * r.personal_std:.1f} %",
            f"{100 * r.global_acc:.1f} ± {100 * r.global_std:.1f} %",
            f"{100 * r.late_gain:+.1f} points",
            f"{r.total_bytes / 1e6:,.1f} MB",
            f"{r.param_bytes / 1e6:,.1f} MB",
            f"{r.s_per_round:.1f}",
            r.ledger_equals_model,
        ]
        for r in agg.itertuples()
    ]
    return table(header, rows)


def plot(agg: pd.DataFrame, rounds: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, (acc, curve, cost) = plt.subplots(1, 3, figsize=(15, 4))
    styles = {"iid": ("o", "-"), "dirichlet": ("s", "--")}
    for split, (marker, line) in styles.items():
        part = agg[agg.partition == split].sort_values("num_clients")
        for col, std in (("personal_acc", "personal_std"), ("global_acc", "global_std")):
            acc.errorbar(
                part.num_clients,
                100 * part[col],
                yerr=100 * part[std],
                marker=marker,
                linestyle=line if col == "global_acc" else ":",
                capsize=3,
                label=f"{col.split('_')[0]}, {split}",
            )
        cost.plot(part.num_clients, part.total_bytes / 1e6, marker=marker, label=split)
        mean = (
            rounds[rounds.partition == split]
            .groupby(["num_clients", "round"])
            .global_acc.mean()
            .reset_index()
        )
        for i, (n, g) in enumerate(mean.groupby("num_clients")):
            curve.plot(
                g["round"], 100 * g.global_acc, line, color=f"C{i}", label=f"{n:,} devices, {split}"
            )
    for ax in (acc, cost):
        ax.set_xscale("log")
        ax.set_xlabel("edge devices sharing the pool")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    for ax in (acc, curve, cost):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    acc.set_ylabel(f"accuracy, mean of the last {LAST} rounds (%)")
    acc.set_title("FedAvg, 1 local epoch, mean ± sd over seeds")
    curve.set_xlabel("round")
    curve.set_ylabel("global accuracy (%), mean over seeds")
    curve.set_title("convergence")
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
        agg, rounds = summarise(args.sweep)
    except miet_fed.MietError as exc:
        print(f"devices_summary: error: {exc}", file=sys.stderr)
        return 2
    print(markdown(agg))
    plot(agg, rounds, args.figure)
    print(f"figure: {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
