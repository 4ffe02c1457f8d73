"""Accuracy per task in a federation of devices with different tasks, one row per strategy.

    .venv/bin/miet-fed sweep configs/sweep_tasks.toml   # 3 tasks x 4 strategies x 3 seeds
    .venv/bin/python simulations/multi_task.py            # the per-task table (markdown)
    .venv/bin/miet-fed sweep configs/sweep_tasks_apart.toml   # the control: each task alone
    .venv/bin/python simulations/multi_task.py --apart results/sweep_tasks_apart

Reads results/sweep_tasks/summary.csv (or --sweep DIR): each run's `per_task` (personal accuracy
of the devices of each task at the last round, and the global model's accuracy on each task's
test set where the strategy has one). Writes multi_task.csv there (mean and sample standard
deviation over seeds per strategy and task) and prints the markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

METRICS = ("personal_acc", "global_acc")


def per_task_rows(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, task) of the sweep's summary (failed runs left out)."""
    ok = summary[summary["error"].isna()] if "error" in summary else summary
    rows = []
    for run in ok.to_dict("records"):
        for task, values in json.loads(run["per_task"]).items():
            rows.append(
                {
                    "strategy": run["fed.strategy"],
                    "seed": run["run.seed"],
                    "task": task,
                    **{m: values.get(m) for m in METRICS},
                }
            )
    return pd.DataFrame(rows)


def summarise(summary: pd.DataFrame) -> pd.DataFrame:
    """Per (strategy, task), and over tasks ('mean of tasks'): mean, sd and seeds."""
    rows = per_task_rows(summary)
    mean_of_tasks = rows.groupby(["strategy", "seed"], as_index=False)[list(METRICS)].mean(
        numeric_only=True
    )
    mean_of_tasks["task"] = "mean of tasks"
    rows = pd.concat([rows, mean_of_tasks], ignore_index=True)
    grouped = rows.groupby(["strategy", "task"], sort=False)
    out = grouped[list(METRICS)].agg(["mean", "std"])
    out.columns = [f"{m}_{s}" for m, s in out.columns]
    out["seeds"] = grouped["seed"].nunique()
    return out.reset_index()


def _cell(mean: float, sd: float) -> str:
    if pd.isna(mean):
        return "–"
    return f"{100 * mean:.1f} ± {100 * sd:.1f}" if not pd.isna(sd) else f"{100 * mean:.1f}"


def markdown(table: pd.DataFrame) -> str:
    """Strategies as rows, tasks as columns: personal accuracy (global where one exists)."""
    tasks = list(dict.fromkeys(table["task"]))
    lines = [
        "| strategy | " + " | ".join(tasks) + " |",
        "|---|" + "---:|" * len(tasks),
    ]
    for strategy, part in table.groupby("strategy", sort=False):
        by_task = part.set_index("task")
        cells = []
        for task in tasks:
            r = by_task.loc[task]
            cell = _cell(r.personal_acc_mean, r.personal_acc_std)
            if not pd.isna(r.global_acc_mean):
                cell += f" (global {_cell(r.global_acc_mean, r.global_acc_std)})"
            cells.append(cell)
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def apart(summary: pd.DataFrame, alone: pd.DataFrame, strategy: str = "fedper") -> pd.DataFrame:
    """`strategy` with one body across all tasks against the same strategy run on each task
    alone (a sweep over data.dataset): personal accuracy per task, mean and sd over seeds."""
    together = per_task_rows(summary)
    together = together[together.strategy == strategy]
    ok = alone[alone["error"].isna()] if "error" in alone else alone
    rows = pd.DataFrame(
        {"task": ok["data.dataset"], "seed": ok["run.seed"], "personal_acc": ok["personal_acc"]}
    )
    out = []
    for task, mine in together.groupby("task", sort=False):
        other = rows[rows.task == task]
        pairs = mine.merge(other, on="seed", suffixes=("", "_alone")).sort_values("seed")
        diffs = pairs.personal_acc - pairs.personal_acc_alone  # same devices, same seed
        out.append(
            {
                "task": task,
                "together_mean": mine.personal_acc.mean(),
                "together_std": mine.personal_acc.std(),
                "alone_mean": other.personal_acc.mean(),
                "alone_std": other.personal_acc.std(),
                "seeds": min(len(mine), len(other)),
                "paired_diffs": " ".join(f"{100 * d:+.1f}" for d in diffs),
                "behind": int((diffs < 0).sum()),
                "pairs": len(diffs),
            }
        )
    return pd.DataFrame(out)


def apart_markdown(table: pd.DataFrame, strategy: str = "fedper") -> str:
    lines = [
        f"| task | {strategy}, one body across the tasks | {strategy}, each task alone | "
        "difference |",
        "|---|---:|---:|---:|",
    ]
    for r in table.itertuples():
        diff = 100 * (r.together_mean - r.alone_mean)
        lines.append(
            f"| {r.task} | {_cell(r.together_mean, r.together_std)} | "
            f"{_cell(r.alone_mean, r.alone_std)} | {diff:+.1f} |"
        )
    lines.append("")
    lines.append(
        f"Seed by seed, one body behind in {table.behind.sum()} of {table.pairs.sum()} pairs:"
    )
    lines += [f"- {r.task}: {r.paired_diffs} points" for r in table.itertuples()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", type=Path, default=Path("results/sweep_tasks"))
    parser.add_argument("--apart", type=Path, help="the sweep of each task alone (the control)")
    args = parser.parse_args(argv)
    source = args.sweep / "summary.csv"
    if not source.is_file():
        print(f"multi_task: error: no {source}; run the sweep first", file=sys.stderr)
        return 2
    table = summarise(pd.read_csv(source))
    table.to_csv(args.sweep / "multi_task.csv", index=False)
    print(markdown(table))
    print(f"wrote {args.sweep / 'multi_task.csv'}")
    if args.apart is not None:
        alone = args.apart / "summary.csv"
        if not alone.is_file():
            print(f"multi_task: error: no {alone}; run that sweep first", file=sys.stderr)
            return 2
        control = apart(pd.read_csv(source), pd.read_csv(alone))
        control.to_csv(args.apart / "apart.csv", index=False)
        print(apart_markdown(control))
    return 0


if __name__ == "__main__":
    sys.exit(main())
