"""Progress and logs of a real simulation (issue 13, part 6): one extraction bar drawn by the
driver, round lines with elapsed time and ETA, the run's log.txt and scalars.jsonl, trackers
added with `add_tracker`, TensorBoard when its package is there and a one-line error when not."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from miet_fed import logging_hooks
from miet_fed.cli import main
from miet_fed.logging_hooks import LOG_FILE, SCALARS_FILE, tensorboard_available
from tests.conftest import TINY

ROUND = re.compile(r"round (\d)/2: personal acc [\d.]+ \(\d+ clients\), .*, [\d.]+ s, ETA [\d.]+ s")


class Tracker:
    def __init__(self, folder: Path) -> None:
        self.folder, self.rounds, self.lines, self.closed = folder, [], [], False

    def log_round(self, round_: int, scalars: dict) -> None:
        self.rounds.append((round_, scalars))

    def log_text(self, line: str) -> None:
        self.lines.append(line)

    def close(self) -> None:
        self.closed = True


@pytest.mark.slow
def test_simulation_logs_rounds_failures_and_one_bar(tiny_npz, monkeypatch, capsys):
    from miet_fed.federation.client_app import FAULT_ENV

    monkeypatch.setenv(FAULT_ENV, "2:1")  # device 2 fails in round 1: a line in the log
    trackers: list[Tracker] = []
    factory = logging_hooks.add_tracker(
        lambda folder: trackers.append(Tracker(folder)) or trackers[-1]
    )
    tb = tensorboard_available()
    try:
        code = main(
            [
                "simulate",
                *TINY,
                "--dataset",
                f"npz:{tiny_npz}",
                "--set",
                "data.n_train=60",
                "--set",
                "data.n_test=20",
                "--num-clients",
                "4",
                "--rounds",
                "2",
                "--strategy",
                "fedavg",
                "--set",
                "train.epochs=1",
                "--set",
                "fed.allow_failures=true",
                "--set",
                f"run.tensorboard={str(tb).lower()}",
                "--out",
                "results/run",
            ]
        )
    finally:
        logging_hooks.TRACKERS.remove(factory)
    err = capsys.readouterr().err
    assert code == 0, err[-2000:]
    run = Path("results/run")

    # One extraction bar, drawn by this process: its updates share one line (\r), none comes
    # from the Ray actor (Ray prefixes a forwarded line with the actor's name and pid).
    bar_lines = [line for line in err.split("\n") if "backbone:" in line]  # not at \r
    assert len(bar_lines) == 1 and "100%" in bar_lines[0], err[:3000]
    assert "BackboneServer pid" not in err

    printed = [line for line in err.splitlines() if ROUND.fullmatch(line)]
    assert [ROUND.fullmatch(line).group(1) for line in printed] == ["1", "2"], err[-2000:]
    assert printed[-1].endswith("ETA 0.0 s")

    log = (run / LOG_FILE).read_text().splitlines()
    assert " simulate: fedavg, 4 devices on " in log[0]
    assert [line for line in log if ROUND.fullmatch(line)] == printed
    assert any("round 1: train failed on device 2: " in line for line in log), log

    scalars = pd.DataFrame([json.loads(x) for x in (run / SCALARS_FILE).read_text().splitlines()])
    rounds = pd.read_csv(run / "rounds.csv").set_index("round").loc[[1, 2]]
    assert scalars["round"].tolist() == [1, 2]
    assert scalars["failures"].tolist() == [1, 0]
    assert scalars["bytes_up"].tolist() == rounds["bytes_up"].astype(int).tolist()
    assert scalars["bytes_down"].tolist() == rounds["bytes_down"].astype(int).tolist()
    assert scalars["personal_acc"].tolist() == pytest.approx(rounds["personal_acc"].tolist())
    assert scalars["global_acc"].tolist() == pytest.approx(rounds["global_acc"].tolist())
    assert (scalars["personal_acc_min"] <= scalars["personal_acc_max"]).all()
    assert (scalars["elapsed_seconds"] > 0).all()

    (tracker,) = trackers
    assert [r for r, _ in tracker.rounds] == [1, 2] and tracker.closed
    assert tracker.rounds[0][1]["clients_trained"] == 3  # device 2 failed
    if tb:
        assert list((run / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.skipif(tensorboard_available(), reason="tensorboard is installed here")
def test_tensorboard_without_its_package_is_one_line_before_any_work(capsys):
    code = main(["simulate", *TINY, "--set", "run.tensorboard=true", "--out", "results/tb"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "pip install tensorboard" in err[0] and "run.tensorboard=false" in err[0]
    assert not Path("results").exists()
