"""Progress and experiment-tracking hooks: round lines with elapsed time and ETA, the full log in
the run folder, and an optional TensorBoard writer, behind one small interface other trackers
(MLflow, W&B, ...) can implement without miet_fed depending on them.

The server's round loop owns the timing; it calls, per run:

    hooks = open_hooks(run_folder, total_rounds=cfg.fed.rounds, tensorboard=False)
    ...
    line = hooks.round(r, {"personal_acc": 0.71, "global_acc": 0.69, "bytes_cum": 1.2e6})
    print(line, file=sys.stderr)          # "round 3/10: personal_acc 0.710 ... 12.3 s, ETA 29 s"
    ...
    hooks.close()

`log.txt` in the run folder receives every line; `scalars.jsonl` one JSON object per round;
TensorBoard (only if the `tensorboard` package is importable) one scalar per key and round.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from miet_fed.errors import MietError

LOG_FILE = "log.txt"
SCALARS_FILE = "scalars.jsonl"
TENSORBOARD_DIR = "tensorboard"


class RunLogger(Protocol):
    """What a tracker implements: scalars per round, free text, and a close."""

    def log_round(self, round_: int, scalars: dict[str, float]) -> None: ...

    def log_text(self, line: str) -> None: ...

    def close(self) -> None: ...


def seconds_text(seconds: float) -> str:
    """12.3 s, 4 min 05 s, 1 h 02 min: short enough for a progress line."""
    if not math.isfinite(seconds):
        return "?"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class RoundClock:
    """Elapsed time and ETA from the rounds done so far (a resumed run counts from its start).

    The first round this process runs also pays for start-up (Ray workers, first contact), so
    once a second round is done the ETA comes from the rounds after the first alone."""

    def __init__(self, total_rounds: int, first_round: int = 1, start: float | None = None) -> None:
        self.total = total_rounds
        self.first = first_round
        self.start = time.perf_counter() if start is None else start  # a perf_counter value
        self._mark: tuple[int, float] | None = None  # (first round ticked, when)

    def tick(self, round_: int) -> tuple[float, float]:
        """(seconds since start, estimated seconds left) after `round_` completed."""
        now = time.perf_counter()
        elapsed = now - self.start
        done = round_ - self.first + 1
        left = max(self.total - round_, 0)
        if self._mark is not None and round_ > self._mark[0]:
            per_round = (now - self._mark[1]) / (round_ - self._mark[0])
        else:
            per_round = elapsed / done if done > 0 else math.inf
        if self._mark is None:
            self._mark = (round_, now)
        return elapsed, per_round * left if left else 0.0


class TextLogger:
    """Appends every line to the run folder's log.txt and every round to scalars.jsonl."""

    def __init__(self, folder: Path, step: str = "round") -> None:
        self.folder, self.step = Path(folder), step  # step: the key of each JSON object's index
        self.folder.mkdir(parents=True, exist_ok=True)

    def log_round(self, round_: int, scalars: dict[str, float]) -> None:
        row = {self.step: round_, **{k: _finite_or_none(v) for k, v in scalars.items()}}
        with (self.folder / SCALARS_FILE).open("a") as f:
            f.write(json.dumps(row, default=float) + "\n")

    def log_text(self, line: str) -> None:
        with (self.folder / LOG_FILE).open("a") as f:
            f.write(line.rstrip("\n") + "\n")

    def close(self) -> None:
        return None


def _finite_or_none(value: Any) -> Any:
    """NaN and inf are not JSON: a missing value (no device evaluated) is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def tensorboard_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def check_tensorboard(enabled: bool) -> None:
    """`run.tensorboard = true` without the package: one line, before any work starts."""
    if enabled and not tensorboard_available():
        raise MietError(
            "run.tensorboard=true needs the tensorboard package: `.venv/bin/pip install "
            "tensorboard` (then `tensorboard --logdir results`), or set run.tensorboard=false"
        )


class TensorBoardLogger:
    """Scalars per round for TensorBoard (torch's SummaryWriter; needs the tensorboard package)."""

    def __init__(self, logdir: Path) -> None:
        check_tensorboard(True)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(logdir))

    def log_round(self, round_: int, scalars: dict[str, float]) -> None:
        for key, value in scalars.items():
            if isinstance(value, (int, float)) and math.isfinite(float(value)):
                self.writer.add_scalar(key, float(value), round_)
        self.writer.flush()  # readable while the run goes on

    def log_text(self, line: str) -> None:
        return None

    def close(self) -> None:
        self.writer.close()


class Hooks:
    """Fans a round out to every logger and returns the progress line to print."""

    def __init__(
        self,
        loggers: list[Any],
        total_rounds: int,
        first_round: int = 1,
        unit: str = "round",
        start: float | None = None,
    ) -> None:
        self.loggers, self.unit = loggers, unit  # unit: "round" (simulate) or "epoch" (tune)
        self.clock = RoundClock(total_rounds, first_round, start)

    def round(
        self, round_: int, scalars: dict[str, float], note: str = "", shown: str | None = None
    ) -> str:
        """Log one round and return its line; `shown` replaces the scalars as the line's text."""
        elapsed, eta = self.clock.tick(round_)
        if shown is None:
            shown = ", ".join(
                f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in scalars.items()
            )
        line = f"{self.unit} {round_}/{self.clock.total}: {shown}{', ' + note if note else ''}, "
        line += f"{seconds_text(elapsed)}, ETA {seconds_text(eta)}"
        for logger in self.loggers:
            logger.log_round(round_, {**scalars, "elapsed_seconds": round(elapsed, 3)})
            logger.log_text(line)
        return line

    def text(self, line: str) -> None:
        """Any other line worth keeping in the run's log (warnings, resume notices)."""
        for logger in self.loggers:
            logger.log_text(line)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()

    def __enter__(self) -> Hooks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: Tracker factories every run of this process opens (`add_tracker`): folder -> RunLogger.
TRACKERS: list[Callable[[Path], RunLogger]] = []


def add_tracker(factory: Callable[[Path], RunLogger]) -> Callable[[Path], RunLogger]:
    """Have every later run of this process (`miet-fed simulate`, `miet_fed.simulate`, whose
    server runs in this process) log to a tracker of yours: `factory(run_folder)` returns an
    object with log_round(round, scalars), log_text(line) and close(). Remove it with
    `TRACKERS.remove(factory)`."""
    TRACKERS.append(factory)
    return factory


def open_hooks(
    folder: Path,
    total_rounds: int,
    *,
    first_round: int = 1,
    tensorboard: bool = False,
    extra: list[Any] | None = None,
    unit: str = "round",
    start: float | None = None,
) -> Hooks:
    """The loggers of one run: its log.txt and scalars.jsonl, TensorBoard if asked, the
    trackers added with `add_tracker`, and any tracker of the caller's (`extra`)."""
    loggers: list[Any] = [TextLogger(folder, unit)]
    if tensorboard:
        loggers.append(TensorBoardLogger(Path(folder) / TENSORBOARD_DIR))
    loggers += [factory(Path(folder)) for factory in TRACKERS]
    loggers += extra or []
    return Hooks(loggers, total_rounds, first_round, unit, start)
