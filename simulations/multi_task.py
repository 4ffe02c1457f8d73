"""Accuracy per task in a federation of devices with different tasks, one row per strategy.

    .venv/bin/miet-fed sweep configs/sweep_tasks.toml   # 3 tasks x 4 strategies x 2 seeds
    .venv/bin/python simulations/multi_task.py            # the per-task table (markdown)

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", type=Path, default=Path("results/sweep_tasks"))
    args = parser.parse_args(argv)
    source = args.sweep / "summary.csv"
    if not source.is_file():
        print(f"multi_task: error: no {source}; run the sweep first", file=sys.stderr)
        return 2
    table = summarise(pd.read_csv(source))
    table.to_csv(args.sweep / "multi_task.csv", index=False)
    print(markdown(table))
    print(f"wrote {args.sweep / 'multi_task.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
