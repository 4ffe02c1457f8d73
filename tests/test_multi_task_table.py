"""simulations/multi_task.py: per-task accuracy over seeds, per strategy, and the tasks' mean."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.conftest import load_script


@pytest.fixture(scope="module")
def mt():
    return load_script("multi_task")


def _summary() -> pd.DataFrame:
    rows = []
    for strategy, has_global in (("fedper", False), ("fedavg", True)):
        for seed in (0, 1):
            per_task = {
                task: {
                    "personal_acc": 0.5 + 0.1 * i + 0.02 * seed,
                    "global_acc": 0.4 + 0.1 * i if has_global else None,
                }
                for i, task in enumerate(("a", "b", "c"))
            }
            rows.append(
                {"fed.strategy": strategy, "run.seed": seed, "per_task": json.dumps(per_task),
                 "error": None}
            )  # fmt: skip
    rows.append({"fed.strategy": "fedavg", "run.seed": 2, "per_task": "{}", "error": "boom"})
    return pd.DataFrame(rows)


def test_mean_spread_and_the_mean_of_tasks(mt):
    table = mt.summarise(_summary()).set_index(["strategy", "task"])
    assert (table["seeds"] == 2).all()  # the failed run is left out
    row = table.loc[("fedper", "b")]
    assert row.personal_acc_mean == pytest.approx(0.61)
    assert row.personal_acc_std == pytest.approx(0.01414, abs=1e-4)
    assert pd.isna(row.global_acc_mean)
    assert table.loc[("fedavg", "mean of tasks")].global_acc_mean == pytest.approx(0.5)
    assert table.loc[("fedper", "mean of tasks")].personal_acc_mean == pytest.approx(0.61)


def test_markdown_has_a_row_per_strategy_and_a_column_per_task(mt):
    text = mt.markdown(mt.summarise(_summary()))
    lines = text.splitlines()
    assert lines[0] == "| strategy | a | b | c | mean of tasks |"
    assert lines[2].startswith("| fedper | 51.0 ± 1.4 |") and "global" not in lines[2]
    assert "(global 40.0 ± 0.0)" in lines[3]


def test_a_missing_sweep_is_one_line(mt, tmp_path, capsys):
    assert mt.main(["--sweep", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_one_body_across_tasks_against_each_task_alone(mt):
    alone = pd.DataFrame(
        [
            {"data.dataset": t, "run.seed": seed, "personal_acc": 0.4 + 0.1 * i, "error": None}
            for i, t in enumerate(("a", "b", "c"))
            for seed in (0, 1)
        ]
    )
    table = mt.apart(_summary(), alone).set_index("task")
    assert table.loc["b", "together_mean"] == pytest.approx(0.61)
    assert table.loc["b", "alone_mean"] == pytest.approx(0.5) and (table.seeds == 2).all()
    text = mt.apart_markdown(table.reset_index())
    assert "| b | 61.0 ± 1.4 | 50.0 ± 0.0 | +11.0 |" in text
    # paired by seed: b's runs at 0.60 and 0.62 against 0.50 alone
    assert table.loc["b", "paired_diffs"] == "+10.0 +12.0" and table.loc["b", "behind"] == 0
    assert f"behind in {table.behind.sum()} of 6 pairs" in text and "- b: +10.0 +12.0" in text
