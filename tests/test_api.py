"""The Python API on real runs: tiny random-ViT `tune` runs (fast) and a tiny Flower simulation
(slow); frames carry the run's settings and integer bytes; bad input raises MietError."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import miet_fed
from miet_fed import MietError

TINY = {
    "model.name": "vit_tiny_patch16_224",
    "model.weights": "random",
    "model.img_size": 32,
    "data.n_train": 60,
    "data.n_test": 60,
    "train.epochs": 2,
}


def _tiny(npz: Path, **extra) -> dict:
    """A tiny tune run's overrides: 12 of the 60 selected images validate."""
    return {"data.dataset": f"npz:{npz}", **TINY, "data.n_val": 12, **extra}


def test_import_is_cheap():
    code = (
        "import sys, miet_fed; heavy = [m for m in ('torch', 'pandas', 'flwr', 'ray', 'timm') "
        "if m in sys.modules]; assert not heavy, heavy; print(miet_fed.__version__)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_tune_returns_a_run_whose_frames_carry_its_settings(tiny_npz):
    run = miet_fed.tune(overrides=_tiny(tiny_npz), out="results/t1", quiet=True)
    assert run.path == Path("results/t1") and run.command == "tune"
    epochs = run.epochs
    assert list(epochs["epoch"]) == [1, 2] and epochs["val_acc"].notna().all()
    assert "test_acc" not in epochs  # tested once, on the best validation epoch
    assert (epochs["run"] == "t1").all() and (epochs["gather"] == "sum").all()
    assert (epochs["k"] == 12).all() and (epochs["seed"] == 0).all()
    assert epochs["strategy"].isna().all()  # one device: no federation settings
    again = miet_fed.load_run("results/t1")
    pd.testing.assert_frame_equal(again.epochs, epochs)
    summary = again.summary
    assert len(summary) == 1 and summary.loc[0, "test_acc"] == run.info["test_acc"]
    assert summary.loc[0, "val_acc"] == epochs["val_acc"].max()
    cost = run.comm_cost()
    n = 120  # 48 train + 12 val + 60 test images, each sent up once and its payload down once
    assert cost.loc[0, "bytes_up_image"] == n * run.info["raw_image_bytes"]
    assert cost.loc[0, "bytes_down_feature"] == n * run.info["bytes_per_image"]
    assert cost["bytes_total"].dtype == "int64"


def test_load_runs_adds_the_keys_that_differ_and_keeps_runs_apart(tiny_npz):
    miet_fed.tune(overrides=_tiny(tiny_npz), out="results/many/a", quiet=True)
    miet_fed.tune(
        overrides=_tiny(tiny_npz, **{"train.lr": "0.01"}), out="results/many/b", quiet=True
    )
    runs = miet_fed.load_runs("results/many")
    assert len(runs) == 2 and runs.varied == ["train.lr"]
    epochs = runs.epochs
    assert set(epochs["train.lr"]) == {0.001, 0.01} and len(epochs) == 4
    # Same id settings, different lr: grouping by run never adds the two together.
    assert epochs.groupby("run").size().tolist() == [2, 2]
    cost = runs.comm_cost()
    assert list(cost["run"]) == ["a", "b"] and "train.lr" in cost
    assert all(cost[c].dtype == "int64" for c in cost if c.startswith("bytes_"))
    assert list(runs.summary["train.lr"]) == [0.001, 0.01]
    both = miet_fed.load_runs(["results/many/a", miet_fed.load_run("results/many/b")])
    assert [r.name for r in both] == ["a", "b"]


def test_config_objects_dicts_and_paths_are_accepted(tiny_npz, tmp_path):
    from miet_fed.api import build

    cfg = build("tune", miet_fed.TuneConfig(), {"model.k": "9", "train.lr": 0.01})
    assert cfg.model.k == 9 and cfg.train.lr == 0.01
    assert build("tune", {"model": {"k": 3}}).model.k == 3
    toml = tmp_path / "c.toml"
    toml.write_text("[fed]\nrounds = 3\n")
    assert build("simulate", toml, {"fed.num_clients": 4}, out="x").fed.rounds == 3
    assert build("simulate", str(toml), out="x").run.out == "x"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: miet_fed.tune(overrides={"rounds": 3}), "is not 'section.key'"),
        (lambda: miet_fed.tune(overrides={"model.nope": 3}), "unknown key 'model.nope'"),
        (lambda: miet_fed.tune(overrides={"model.k": "nine"}), "model.k must be an integer"),
        (lambda: miet_fed.tune(overrides={"model.gather": "max"}), "unknown gather function 'max'"),
        (lambda: miet_fed.simulate(miet_fed.TuneConfig()), "simulate needs a SimulateConfig"),
        (lambda: miet_fed.tune(42), "config must be a TOML path"),
        (lambda: miet_fed.tune("missing.toml"), "config file not found"),
        (lambda: miet_fed.simulate(overrides={"fed.strategy": "x"}), "unknown strategy 'x'"),
        (lambda: miet_fed.load_run("nowhere"), "is not a finished miet-fed run"),
        (lambda: miet_fed.load_runs("nowhere"), "is not a folder"),
        (lambda: miet_fed.load_runs([]), "no folders given"),
        (lambda: miet_fed.load_runs(None), "give a sweep folder"),
        (lambda: miet_fed.load_runs(3), "give a sweep folder"),
        (lambda: miet_fed.load_runs([3]), "3 is not a folder path or a Run"),
        (lambda: miet_fed.simulate(overrides=["fed.rounds=2"]), "overrides must map"),
        (lambda: miet_fed.tune(overrides="train.epochs=2"), "overrides must map"),
    ],
)
def test_bad_input_raises_mieterror_not_exit(call, message):
    with pytest.raises(MietError, match=message):
        call()


def test_an_empty_folder_is_no_run(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MietError, match="no finished run under"):
        miet_fed.load_runs(tmp_path / "empty")


@pytest.mark.slow
def test_simulate_frames_and_comm_cost(tiny_npz):
    """A tiny Flower simulation (4 clients, 2 rounds): every frame tagged, bytes integer, and
    the cost table equals the ledger total the run reported."""
    run = miet_fed.simulate(
        overrides={
            "data.dataset": f"npz:{tiny_npz}",
            **TINY,
            "train.epochs": 1,
            "fed.num_clients": 4,
            "fed.rounds": 2,
            "fed.partition": "iid",
            "fed.strategy": "fedavg",
        },
        out="results/sim",
        quiet=True,
    )
    for name in ("clients", "rounds", "ledger", "partitions"):
        frame = getattr(run, name)
        assert len(frame), name
        assert (frame["strategy"] == "fedavg").all() and (frame["num_clients"] == 4).all()
        assert (frame["run"] == "sim").all()
        for col in frame:
            if "bytes" in col:
                assert str(frame[col].dtype) in ("int64", "Int64"), (name, col)
    cost = run.comm_cost()
    assert cost.loc[0, "bytes_total"] == run.info["total_bytes"]
    assert cost.loc[0, "bytes_up"] + cost.loc[0, "bytes_down"] == run.info["total_bytes"]
    assert cost.loc[0, "bytes_down_params"] > 0 and cost.loc[0, "bytes_up_image"] > 0


@pytest.mark.slow
def test_api_example_script_runs(capsys):
    """simulations/api_example.py --quick: two tiny simulations through the API, then the
    five-line pandas analysis the README shows."""
    from tests.conftest import load_script

    module = load_script("api_example")
    assert module.main(["--quick", "--out", "results/example"]) == 0
    out = capsys.readouterr().out
    assert "bytes_total" in out and "fedper-n10" in out
    assert len(miet_fed.load_runs("results/example")) == 2
