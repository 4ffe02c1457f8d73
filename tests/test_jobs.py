"""The job interface: every kind of run declares what differs, nobody branches on its name."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from miet_fed.errors import MietError
from miet_fed.jobs import JOBS, config_classes, job

PACKAGE = Path(__file__).resolve().parents[1] / "miet_fed"


@pytest.mark.parametrize("name", sorted(JOBS))
def test_every_job_resolves_its_config_runner_and_planner(name):
    kind = job(name)
    assert kind.name == name
    assert dataclasses.is_dataclass(kind.config_class)
    assert kind.config_class().__class__ is kind.config_class  # defaults build
    assert callable(kind.runner) and callable(kind.planner)
    assert kind.primary in kind.sweep_metrics
    assert kind.step in ("epoch", "round") and kind.rows_file.endswith(".csv")


def test_config_classes_follow_the_jobs():
    assert list(config_classes()) == list(JOBS)


@pytest.mark.parametrize("bad", ["train", None, 3, ""])
def test_an_unknown_command_is_one_line_naming_the_valid_ones(bad):
    with pytest.raises(MietError, match="valid: tune, simulate"):
        job(bad)


def test_no_branching_on_a_commands_name_outside_the_cli():
    pattern = re.compile(r"""(command|kind)["']?\)?\s*[!=]=\s*["'](tune|simulate)["']""")
    offenders = [
        f"{path.relative_to(PACKAGE)}:{i}"
        for path in PACKAGE.rglob("*.py")
        if not path.name.startswith("cli")
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not offenders, f"branch on the Job's attributes instead: {offenders}"
