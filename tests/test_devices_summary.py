"""simulations/devices_summary.py: end accuracy over the last rounds, late gain, seeds, plot."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.conftest import load_script


@pytest.fixture(scope="module")
def ds():
    return load_script("devices_summary")


def _frames(n_rounds: int = 40):
    """Two device counts x two seeds; accuracy rises linearly, seed 1 is 0.1 above seed 0."""
    summary, rounds = [], []
    for n, slope in ((10, 0.0), (1000, 0.01)):
        for seed in (0, 1):
            run = f"n{n}-s{seed}"
            summary.append(
                {
                    "run": run,
                    "num_clients": n,
                    "partition": "iid",
                    "seed": seed,
                    "rounds": n_rounds,
                    "clients_per_round": n // 5,
                    "total_bytes": 1e6 * n,
                    "bytes_by_kind.params": 1e5 * n,
                    "ledger_equals_model": True,
                }
            )
            for r in range(1, n_rounds + 1):
                acc = 0.5 + slope * r + 0.1 * seed
                rounds.append(
                    {
                        "run": run,
                        "num_clients": n,
                        "partition": "iid",
                        "round": r,
                        "global_acc": acc,
                        "personal_acc": acc,
                        "elapsed_seconds": 2.0 * r,
                    }
                )
    return pd.DataFrame(summary), pd.DataFrame(rounds)


def test_end_accuracy_is_the_mean_of_the_last_rounds_and_gain_shows_a_rising_run(ds):
    summary, rounds = _frames()
    runs = ds.per_run(summary, rounds).set_index("run")
    # rounds 31..40 of 0.5 + 0.01 r: mean 0.5 + 0.01 * 35.5; rounds 21..30: 0.1 lower
    assert runs.loc["n1000-s0", "global_end"] == pytest.approx(0.855)
    assert runs.loc["n1000-s0", "late_gain"] == pytest.approx(0.1)
    assert runs.loc["n10-s1", "late_gain"] == pytest.approx(0.0)
    assert runs.loc["n10-s1", "s_per_round"] == pytest.approx(2.0)
    agg = ds.aggregate(runs.reset_index()).set_index("num_clients")
    assert agg.loc[10, "seeds"] == 2 and agg.loc[10, "trained"] == 2
    assert agg.loc[10, "global_acc"] == pytest.approx(0.55)
    assert agg.loc[10, "global_std"] == pytest.approx(np.std([0.5, 0.6], ddof=1))
    table = ds.markdown(agg.reset_index())
    assert "+10.0 points" in table and "+0.0 points" in table


def test_plot_writes_the_figure(ds, tmp_path):
    summary, rounds = _frames()
    agg = ds.aggregate(ds.per_run(summary, rounds))
    ds.plot(agg, rounds, tmp_path / "fig.png")
    assert (tmp_path / "fig.png").stat().st_size > 10_000
