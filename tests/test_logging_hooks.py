"""Progress and logging hooks: round lines with elapsed time and ETA, the run folder's log and
scalars, custom trackers, and TensorBoard only when its package is there."""

from __future__ import annotations

import json
import re

import pytest

from miet_fed.errors import MietError
from miet_fed.logging_hooks import (
    LOG_FILE,
    SCALARS_FILE,
    RoundClock,
    open_hooks,
    seconds_text,
    tensorboard_available,
)


class Tracker:
    """A tracker of the user's: three methods, no base class."""

    def __init__(self) -> None:
        self.rounds: list[tuple[int, dict]] = []
        self.closed = False

    def log_round(self, round_: int, scalars: dict) -> None:
        self.rounds.append((round_, scalars))

    def log_text(self, line: str) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def test_round_lines_are_logged_with_elapsed_and_eta(tmp_path):
    tracker = Tracker()
    with open_hooks(tmp_path / "run", total_rounds=3, extra=[tracker]) as hooks:
        lines = [hooks.round(r, {"personal_acc": 0.5 + 0.1 * r, "clients": 4}) for r in (1, 2, 3)]
        hooks.text("done")
    assert re.fullmatch(
        r"round 1/3: personal_acc 0\.600, clients 4, [\d.]+ s, ETA [\d.]+ s", lines[0]
    )
    assert lines[2].endswith("ETA 0.0 s")
    log = (tmp_path / "run" / LOG_FILE).read_text().splitlines()
    assert log == [*lines, "done"]
    rows = [json.loads(x) for x in (tmp_path / "run" / SCALARS_FILE).read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2, 3] and rows[0]["clients"] == 4
    assert [r for r, _ in tracker.rounds] == [1, 2, 3] and tracker.closed


def test_eta_counts_from_the_first_round_this_process_ran():
    clock = RoundClock(total_rounds=10, first_round=5)  # resumed after round 4
    clock.start -= 6.0  # 6 s for rounds 5 and 6
    elapsed, eta = clock.tick(6)
    assert elapsed == pytest.approx(6.0, abs=0.5) and eta == pytest.approx(12.0, abs=1.0)


def test_seconds_text():
    assert [seconds_text(s) for s in (3.21, 245, 3725)] == ["3.2 s", "4 min 05 s", "1 h 02 min"]


@pytest.mark.skipif(tensorboard_available(), reason="tensorboard is installed here")
def test_tensorboard_without_its_package_is_one_line(tmp_path):
    with pytest.raises(MietError, match="pip install tensorboard"):
        open_hooks(tmp_path, total_rounds=2, tensorboard=True)


@pytest.mark.skipif(not tensorboard_available(), reason="tensorboard is not installed")
def test_tensorboard_writes_event_files(tmp_path):
    with open_hooks(tmp_path, total_rounds=2, tensorboard=True) as hooks:
        hooks.round(1, {"personal_acc": 0.5})
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
