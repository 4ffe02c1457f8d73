"""`miet-fed report`: a tune sweep on a tiny random ViT, simulate sweeps made of small hand-written
run folders (with and without the communication ledger), single runs, and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from miet_fed.cli import main
from miet_fed.config import to_toml
from miet_fed.report import total_bytes
from miet_fed.sweep import load_sweep, plan
from tests.conftest import make_tiny_npz
from tests.test_sweep import session_cache, write_sweep

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    """A real, non-trivial PNG that matplotlib reads back."""
    from matplotlib.image import imread

    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_MAGIC, path
    assert path.stat().st_size > 10_000, path
    h, w = imread(path).shape[:2]
    assert h >= 300 and w >= 500, (path, h, w)


@pytest.fixture(scope="module")
def tune_sweep(tmp_path_factory) -> Path:
    """One 2-point tune sweep (Gather* and the CLS linear probe) shared by the tune tests."""
    root = tmp_path_factory.mktemp("report-sweep")
    toml = write_sweep(
        root / "g.toml",
        make_tiny_npz(root / "tiny.npz"),
        name="g",
        points=[
            {"model.gather": "sum", "edge.name": "lae"},
            {"model.gather": "cls", "edge.name": "linear"},
        ],
        seeds=[0],
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIET_FED_CACHE", str(session_cache(tmp_path_factory)))
        assert main(["sweep", str(toml), "--quiet", "--out", str(root / "g")]) == 0
    return root / "g"


def test_report_on_a_tune_sweep(tune_sweep, capsys):
    assert main(["report", str(tune_sweep)]) == 0
    assert "report.md" in capsys.readouterr().out
    out = tune_sweep / "report"
    for name in ("pareto.png", "curves.png"):
        assert_png(out / name)
    md = (out / "report.md").read_text()
    assert "![Accuracy vs total bytes](pareto.png)" in md
    assert "- `pareto.png`: Accuracy vs total bytes" in md
    assert "accuracy and bytes vs number of clients: fed.num_clients does not vary" in md
    assert "per-client accuracy spread: tune runs have a single device" in md
    assert "val_acc of every run after each epoch" in md  # never the test accuracy per epoch
    assert "| test_acc | val_acc | best_epoch |" in md
    assert md.count("| gather_cls-edge_linear-seed_0 |") >= 3  # runs, Pareto and cost tables
    cost = pd.read_csv(out / "cost_per_image.csv")
    assert (cost["bytes_per_image"] == cost["predicted_bytes_per_image"]).all()
    assert list(cost["bytes_per_image"]) == [5 * 192 * 4, 192 * 4]  # 4 patches + CLS, fp32
    pareto = pd.read_csv(out / "pareto.csv")
    assert len(pareto) == 2 and bool(pareto.loc[1, "pareto"])  # cls: fewest bytes


def test_report_to_another_folder_and_on_one_tune_run(tune_sweep, tmp_path):
    assert main(["report", str(tune_sweep), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "report.md").is_file()
    assert_png(tmp_path / "rep" / "pareto.png")

    run = tune_sweep / "runs" / "gather_cls-edge_linear-seed_0"
    assert main(["report", str(run), "--out", str(tmp_path / "one")]) == 0
    assert_png(tmp_path / "one" / "accuracy_per_epoch.png")
    md = (tmp_path / "one" / "report.md").read_text()
    assert "Single `tune` run" in md and "| test_acc |" in md and "| best_epoch |" in md
    assert "accuracy and loss after every epoch on the train, validation images" in md
    assert "bytes per round: tune is one device without rounds" in md


def test_report_on_a_tune_run_from_before_validation(tune_sweep, tmp_path):
    """A run saved before the validation protocol (test per epoch, no val columns) still
    reports: its test curve is drawn, and the sweep curves fall back to it."""
    old = tmp_path / "old"
    shutil.copytree(tune_sweep, old, ignore=shutil.ignore_patterns("report"))
    for metrics in old.glob("runs/*/metrics.csv"):
        df = pd.read_csv(metrics).drop(columns=["val_loss", "val_acc"])
        df.assign(test_loss=0.5, test_acc=0.75).to_csv(metrics, index=False)
    runs = pd.read_csv(old / "runs.csv").drop(columns=["val_loss", "val_acc"])
    runs.assign(test_acc=0.75).to_csv(old / "runs.csv", index=False)
    assert main(["report", str(old)]) == 0
    assert "test_acc of every run after each epoch" in (old / "report" / "report.md").read_text()
    run = next((old / "runs").iterdir())
    assert main(["report", str(run)]) == 0
    assert "on the train, test (diagnostic) images" in (run / "report" / "report.md").read_text()


def test_report_errors_are_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "neither summary.csv" in err[0]


# ---------------------------------------------------------------- simulate, hand-written runs


def _fake_simulate_run(point, ledger: bool) -> None:
    """A small but complete simulate run folder, in the shape `run_simulate` writes."""
    cfg = point.cfg
    n, strategy, rounds = cfg.fed.num_clients, cfg.fed.strategy, cfg.fed.rounds
    rng = np.random.default_rng(n + len(strategy))
    has_global = strategy != "local"
    params = 0 if strategy == "local" else 200_000 * n
    rows, clients, entries = [], [], []
    cum = 0
    if has_global:
        rows.append({"round": 0, "global_acc": 0.3})
    for r in range(1, rounds + 1):
        accs = np.clip(0.5 + 0.1 * r + rng.normal(0, 0.1, size=n), 0, 1)
        clients += [
            {"round": r, "client": c, "n_test": 5, "personal_acc": a} for c, a in enumerate(accs)
        ]
        up, down = params // 2 + 100 * n, params + (50_000 * n if r == 1 else 0)
        cum += up + down
        row = {
            "round": r,
            "clients_trained": n,
            "train_loss": 1.0 / r,
            "personal_acc": accs.mean(),
            "personal_acc_std": accs.std(),
        }
        if ledger:
            row |= {"bytes_up": up, "bytes_down": down, "bytes_cum": cum}
            entries += [
                {"round": r, "client": 0, "direction": "up", "kind": "params", "bytes": up},
                {"round": r, "client": 0, "direction": "down", "kind": "feature", "bytes": down},
            ]
        else:
            row |= {"params_up_bytes": params // 2, "params_down_bytes": params}
        if has_global:
            row["global_acc"] = 0.4 + 0.1 * r
        rows.append(row | {"failures": 0})
    folder = point.folder
    folder.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(folder / "rounds.csv", index=False)
    pd.DataFrame(clients).to_csv(folder / "clients.csv", index=False)
    if ledger:
        pd.DataFrame(entries).to_csv(folder / "ledger.csv", index=False)
    summary = {
        "command": "simulate",
        "strategy": strategy,
        "num_clients": n,
        "clients_per_round": n,
        "rounds": rounds,
        "personal_acc": rows[-1]["personal_acc"],
        "global_acc": rows[-1].get("global_acc"),
        "failures": 0,
        "bytes_served": 50_000 * n,
        "wall_seconds": 1.0,
    }
    if ledger:
        summary["total_bytes"] = cum
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "config.toml").write_text(to_toml(cfg))


@pytest.mark.parametrize("ledger", [True, False])
def test_report_on_a_simulate_sweep(tiny_npz, tmp_path, capsys, ledger):
    toml = write_sweep(
        tmp_path / "s.toml",
        tiny_npz,
        command="simulate",
        # 40 devices share 110 images (iid): planning checks the partition.
        fixed={
            "fed.rounds": 3,
            "data.n_train": 110,
            "data.n_test": 5,
            "fed.partition": "iid",
            "fed.min_train": 1,
        },
        grid={"fed.num_clients": [4, 8, 40], "fed.strategy": ["local", "fedavg"]},
    )
    points = plan(load_sweep(toml), Path("results/sw"))
    for p in points:
        _fake_simulate_run(p, ledger)
    # Every point is done: the sweep only gathers the tables.
    assert main(["sweep", str(toml), "--quiet"]) == 0
    assert capsys.readouterr().err.count("skipped (done)") == 6
    runs = pd.read_csv("results/sw/runs.csv")
    assert len(runs) == 3 * 3 + 3 * 4  # local: rounds 1-3; fedavg: rounds 0-3
    summary = pd.read_csv("results/sw/summary.csv")
    expected = "ledger" if ledger else "parameters + features served (no ledger)"
    assert (summary["bytes_source"] == expected).all()
    local4 = summary[summary["run"] == "num_clients_4-strategy_local"].iloc[0]
    assert local4["total_bytes"] == (3 * 400 + 200_000 if ledger else 200_000)

    assert main(["report", "results/sw"]) == 0
    out = Path("results/sw/report")
    for name in ("pareto.png", "vs_clients.png", "client_spread.png", "curves.png"):
        assert_png(out / name)
    md = (out / "report.md").read_text()
    assert "Plots not written:\n\n- none" in md
    by = pd.read_csv(out / "by_clients.csv")
    assert set(by["strategy"]) == {"local", "fedavg"} and sorted(set(by["num_clients"])) == [
        4,
        8,
        40,
    ]
    spread = pd.read_csv(out / "client_spread.csv")
    assert list(spread["clients"]) == [4, 4, 8, 8, 40, 40]
    cost = "cost_by_kind.csv" if ledger else "cost_per_run.csv"
    assert (out / cost).is_file() and f"`{cost}`" in md

    run = Path("results/sw/runs/num_clients_8-strategy_fedavg")
    assert main(["report", str(run)]) == 0
    assert_png(run / "report" / "accuracy_per_round.png")
    assert_png(run / "report" / "bytes_per_round.png")
    per_round = pd.read_csv(run / "report" / "bytes_per_round.csv")
    assert list(per_round["round"]) == [0, 1, 2, 3]


def test_over_seeds_gives_mean_and_sample_spread_per_setting():
    from miet_fed.report.tables import over_seeds

    df = pd.DataFrame(
        {
            "run.seed": [0, 1, 2, 0, 1, 2],
            "model.k": [12, 12, 12, 6, 6, 6],
            "test_acc": [0.90, 0.90, 0.93, 0.80, 0.82, 0.84],
            "bytes": [1, 2, 3, 4, 5, 6],
        }
    )
    got = over_seeds(df, ["test_acc", "global_acc"])  # a metric the runs lack is left out
    assert list(got.columns) == ["model.k", "seeds", "test_acc mean", "test_acc std"]
    assert list(got["model.k"]) == [12, 6] and list(got["seeds"]) == [3, 3]  # sweep order
    assert got["test_acc mean"].tolist() == pytest.approx([0.91, 0.82])
    # sample standard deviation: sqrt(((-.01)^2 + (-.01)^2 + .02^2) / 2) and sqrt(.0008 / 2)
    assert got["test_acc std"].tolist() == pytest.approx([0.0173205, 0.02], rel=1e-5)
    assert over_seeds(df[df["run.seed"] == 0], ["test_acc"]) is None  # one seed: no spread
    one = over_seeds(df[df["model.k"] == 6], ["test_acc"])  # nothing else varies
    assert list(one.columns) == ["seeds", "test_acc mean", "test_acc std"]


def test_report_on_a_sweep_of_several_seeds_has_their_spread(tiny_npz, capsys):
    toml = write_sweep(
        Path("s.toml"),
        tiny_npz,
        command="simulate",
        fixed={"fed.rounds": 2, "data.n_train": 110, "data.n_test": 5, "fed.partition": "iid"},
        grid={"fed.strategy": ["local", "fedavg"]},
        seeds=[0, 1],
        name="sd",
    )
    for p in plan(load_sweep(toml), Path("results/sd")):
        _fake_simulate_run(p, True)
    assert main(["sweep", str(toml), "--quiet"]) == 0
    assert capsys.readouterr().err.count("skipped (done)") == 4  # the fakes: nothing ran
    assert main(["report", "results/sd"]) == 0
    md = Path("results/sd/report/report.md").read_text()
    assert "### Mean and spread over seeds" in md
    seeds = pd.read_csv("results/sd/report/over_seeds.csv")
    assert list(seeds["fed.strategy"]) == ["local", "fedavg"] and set(seeds["seeds"]) == {2}
    summary = pd.read_csv("results/sd/summary.csv")
    fedavg = summary[summary["fed.strategy"] == "fedavg"]
    assert seeds["global_acc mean"].iloc[1] == pytest.approx(fedavg["global_acc"].mean())


def test_total_bytes_prefers_the_ledger_and_falls_back():
    rounds = pd.DataFrame({"params_up_bytes": [1, 2], "params_down_bytes": [10, 20]})
    assert total_bytes({"command": "simulate", "total_bytes": 99}, rounds) == (99.0, "ledger")
    ledger_rounds = rounds.assign(bytes_cum=[5, 50])
    assert total_bytes({"command": "simulate"}, ledger_rounds) == (50.0, "ledger")
    assert total_bytes({"command": "simulate"}, rounds)[0] == 33
    assert total_bytes({"command": "simulate", "bytes_served": 7}, rounds)[0] == 40
    tune = {"command": "tune", "bytes_per_image": 10, "raw_image_bytes": 2, "n_train": 3}
    assert total_bytes(tune | {"n_test": 1}, None)[0] == 48
    assert total_bytes(tune | {"n_val": 2, "n_test": 1}, None)[0] == 72  # val images count
    assert total_bytes({"command": "tune"}, None) == (None, "unknown")
