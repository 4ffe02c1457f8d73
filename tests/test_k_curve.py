"""simulations/k_curve.py: mean and spread over seeds per (k, head), the table and the plot."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.conftest import load_script


@pytest.fixture(scope="module")
def kc():
    return load_script("k_curve")


def _summary() -> pd.DataFrame:
    rows = []
    for k in (0, 6, 12):
        for blocks in (0, 2):
            for seed in (0, 1, 2):
                acc = 0.5 + 0.03 * k + 0.05 * blocks + 0.01 * seed
                rows.append(
                    {
                        "k": k,
                        "edge.blocks": blocks,
                        "run.seed": seed,
                        "test_acc": acc,
                        "val_acc": acc + 0.02,
                        "trainable_params": 1000 + blocks,
                        "error": None,
                    }
                )
    rows.append({"k": 12, "edge.blocks": 2, "run.seed": 3, "test_acc": 0.0, "error": "boom"})
    return pd.DataFrame(rows)


def test_means_spread_and_failed_runs_left_out(kc):
    table = kc.summarise(_summary())
    assert len(table) == 6 and (table["test_count"] == 3).all()  # the failed run is left out
    row = table[(table.k == 12) & (table["edge.blocks"] == 2)].iloc[0]
    assert row.test_mean == pytest.approx(0.5 + 0.36 + 0.1 + 0.01)
    assert row.test_std == pytest.approx(0.01)
    assert row.seeds == "96.0, 97.0, 98.0"
    md = kc.markdown(table)
    assert md.count("\n") == 1 + 6 and "**97.0 ± 1.0 %**" in md


def test_main_writes_csv_and_figure(kc, tmp_path, capsys):
    sweep = tmp_path / "sweep_k"
    sweep.mkdir()
    _summary().to_csv(sweep / "summary.csv", index=False)
    fig = tmp_path / "k.png"
    assert kc.main(["--sweep", str(sweep), "--figure", str(fig)]) == 0
    assert fig.stat().st_size > 1000 and (sweep / "k_curve.csv").is_file()
    assert kc.main(["--sweep", str(tmp_path / "none")]) == 2
    assert "run the sweep first" in capsys.readouterr().err
