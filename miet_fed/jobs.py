"""The two kinds of run: one device (`tune`) and a federation (`simulate`).

What differs between them (their config class, runner, per-step table, headline metric, whether
devices, rounds and a ledger exist) is declared here once, so the sweep, the report and the
Python API read a `Job`'s attributes instead of branching on the command's name. Nothing heavy
is imported until a job's config class or runner is asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from miet_fed.errors import MietError


def _resolve(dotted: str) -> Any:
    module, _, name = dotted.partition(":")
    return getattr(import_module(module), name)


@dataclass(frozen=True)
class Job:
    name: str
    config_path: str  # "module:Class" of its frozen config dataclass
    runner_path: str  # "module:function" taking the config, returning the run's summary
    planner_path: str  # "module:function": every check a run makes before its first forward
    federated: bool  # devices, rounds, clients.csv, rounds.csv and a ledger.csv
    rows_file: str  # the per-step table the run writes
    step: str  # its step column: "epoch" or "round"
    primary: str  # the headline accuracy column (of summary.json)
    primary_text: str  # ... in words
    curve: str  # the accuracy column of rows_file drawn per step (the primary in older runs)
    accuracy_axis: str  # the y label of accuracy-per-run plots
    sweep_metrics: tuple[str, ...]  # summary columns a sweep's run table shows
    color_order: tuple[str, ...]  # what to color runs by first when it varies

    @property
    def config_class(self) -> type:
        return _resolve(self.config_path)

    @property
    def runner(self) -> Callable[[Any], dict[str, Any]]:
        return _resolve(self.runner_path)

    @property
    def planner(self) -> Callable[[Any], None]:
        return _resolve(self.planner_path)


JOBS: dict[str, Job] = {
    "tune": Job(
        name="tune",
        config_path="miet_fed.config:TuneConfig",
        runner_path="miet_fed.tuning:run_tune",
        planner_path="miet_fed.tuning:plan_check",
        federated=False,
        rows_file="metrics.csv",
        step="epoch",
        primary="test_acc",  # evaluated once, on the epoch of best validation accuracy
        primary_text="test accuracy",
        curve="val_acc",  # test per epoch only with train.test_curve=true (a diagnostic)
        accuracy_axis="test accuracy (%)",
        sweep_metrics=(
            "test_acc",
            "val_acc",
            "best_epoch",
            "bytes_per_image",
            "total_bytes",
            "trainable_params",
            "train_seconds",
        ),
        color_order=("gather", "strategy"),
    ),
    "simulate": Job(
        name="simulate",
        config_path="miet_fed.config:SimulateConfig",
        runner_path="miet_fed.federation.runner:run_simulate",
        planner_path="miet_fed.federation.runner:plan_check",
        federated=True,
        rows_file="rounds.csv",
        step="round",
        primary="personal_acc",
        primary_text="personal accuracy",
        curve="personal_acc",
        accuracy_axis="final-round accuracy (%)",
        sweep_metrics=("personal_acc", "global_acc", "total_bytes", "failures", "wall_seconds"),
        color_order=("strategy", "gather"),
    ),
}


def job(name: Any) -> Job:
    """The job called `name`; an unknown one is a one-line error naming the valid ones."""
    try:
        return JOBS[name]
    except (KeyError, TypeError):
        raise MietError(f"unknown command {name!r}; valid: {', '.join(JOBS)}") from None


def config_classes() -> dict[str, type]:
    return {name: j.config_class for name, j in JOBS.items()}
