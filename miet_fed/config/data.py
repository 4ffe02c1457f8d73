"""The `[data]` section: one dataset, or several tasks on one shared backbone.

Each `[[data.tasks]]` table is one task: its dataset (own label space), its devices and, where
it differs from `[fed]`, its own selection and label skew. With no tasks the run is the
single-dataset federation of `data.dataset`, as before (`data.tasks` at its default keeps every
earlier run's identity).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from miet_fed.config.fields import Section, require, setting

_NAME = r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}"


def dataset_setting(default: str, help: str) -> Any:  # noqa: A002 - the field's help text
    """A dataset key: a registered name, or the user forms npz:PATH and folder:PATH."""
    return setting(
        default,
        help,
        names="miet_fed.data.datasets:DATASETS",
        check="miet_fed.data.datasets:check_dataset_name",
        also=("npz:PATH", "folder:PATH"),
    )


def dataset_stem(spec: str) -> str:
    """A dataset spec's short name for run folders: the built-in name, or the file's or
    folder's name (`npz:data/my.npz` -> `my.npz`)."""
    return spec.split(":")[-1].rstrip("/").split("/")[-1]


@dataclass(frozen=True)
class TaskConfig(Section):
    """One task of a multi-task federation (`[[data.tasks]]`)."""

    section: ClassVar[str] = "data.tasks"
    name: str = setting(
        "",
        "the task's name (results' task column, summary per_task); default: the dataset's",
        allowed="letters, digits, _ and - (up to 40)",
    )
    dataset: str = dataset_setting("", "built-in name, npz:PATH or folder:PATH (required)")
    num_clients: int = setting(10, "the task's devices; they share its n_train pool", ge=1)
    n_train: int = setting(1000, "the task's training pool (stratified, seeded)", ge=1)
    n_test: int = setting(1000, "the task's held-out test images (0 = all the rest)", ge=0)
    partition: str = setting(
        "",
        "how the task's pool is split ('' = fed.partition)",
        names="miet_fed.federation.partition:PARTITIONERS",
        also=("'' (fed.partition)",),
    )
    alpha: float = setting(0.0, "Dirichlet concentration (0 = fed.alpha)", ge=0)
    classes_per_client: int = setting(
        0, "classes per device, pathological partition (0 = fed.classes_per_client)", ge=0
    )

    def check(self) -> None:
        require(
            bool(self.dataset.strip()),
            'a [[data.tasks]] table has no dataset; write dataset = "NAME" (a built-in name, '
            "npz:PATH or folder:PATH)",
        )
        name = self.label
        require(
            re.fullmatch(_NAME, name) is not None,
            f"data.tasks name {name!r} must be letters, digits, _ or - (up to 40); set "
            'name = "..." in its [[data.tasks]] table',
        )

    @property
    def label(self) -> str:
        """The task's name: `name`, or one made from the dataset (its file's stem)."""
        if self.name:
            return self.name
        stem = dataset_stem(self.dataset).rsplit(".", 1)[0]
        return re.sub(r"[^A-Za-z0-9_-]", "-", stem)[:40] or "task"


def check_tasks(tasks: tuple[TaskConfig, ...]) -> None:
    """Rules across the list: distinct names."""
    seen: dict[str, int] = {}
    for i, task in enumerate(tasks):
        require(
            task.label not in seen,
            f"data.tasks {seen.get(task.label, 0) + 1} and {i + 1} are both named "
            f'{task.label!r}; give each [[data.tasks]] table its own name = "..."',
        )
        seen[task.label] = i


@dataclass(frozen=True)
class DataConfig(Section):
    section: ClassVar[str] = "data"
    dataset: str = dataset_setting("animal-mnist", "built-in name, npz:PATH or folder:PATH")
    n_train: int = setting(
        1000,
        "training images (VTAB-1K: 1000, stratified, seeded; tune validates on data.n_val of them)",
        ge=1,
    )
    n_test: int = setting(1000, "held-out test images (0 = all the rest)", ge=0)
    tasks: tuple[TaskConfig, ...] = setting(
        (),
        "several tasks on one backbone: one [[data.tasks]] table each (dataset, num_clients, "
        "n_train, n_test, partition...); replaces data.dataset, n_train and n_test",
        allowed="[[data.tasks]] tables (README: Devices with different tasks)",
        added=True,  # at its default, runs from before it keep their identity
    )

    def check(self) -> None:
        check_tasks(self.tasks)
        if self.tasks:
            moved = [
                f"data.{k}"
                for k in ("dataset", "n_train", "n_test")
                if getattr(self, k) != getattr(DataConfig, k)
            ]
            require(
                not moved,
                f"{', '.join(moved)} {'is' if len(moved) == 1 else 'are'} not used with "
                "[[data.tasks]]: set dataset, n_train and n_test in each task's table",
            )

    @property
    def task_list(self) -> tuple[TaskConfig, ...]:
        """The run's tasks: the `[[data.tasks]]` tables, or one made of data.dataset."""
        if self.tasks:
            return self.tasks
        return (TaskConfig(dataset=self.dataset, n_train=self.n_train, n_test=self.n_test),)


@dataclass(frozen=True)
class TuneDataConfig(DataConfig):
    """`tune`'s data: the training selection also yields the validation images."""

    n_val: int = setting(
        200,
        "validation images, taken out of data.n_train (VTAB-1K: 800 train + 200 val); the "
        "epoch of best validation accuracy is kept and tested once (0 = no validation: the "
        "last epoch is kept)",
        ge=0,
        allowed=">= 0 and < data.n_train",
        legacy=0,
    )

    def check(self) -> None:
        super().check()
        for task in self.tasks:
            federated = [
                k
                for k in ("num_clients", "partition", "alpha", "classes_per_client")
                if getattr(task, k) != getattr(TaskConfig, k)
            ]
            require(
                not federated,
                f"data.tasks {task.label!r} sets {', '.join(federated)}, which only simulate "
                "uses; tune trains one device per task: leave them out",
            )
            require(
                self.n_val < task.n_train,
                f"data.n_val={self.n_val} leaves task {task.label!r} no training images "
                f"(its n_train={task.n_train}); set a smaller data.n_val or a larger n_train",
            )
        fifth = f"data.n_val={self.n_train // 5} (a fifth, as VTAB-1K's 200 of 1000) or "
        require(
            self.n_val < self.n_train,
            f"data.n_val={self.n_val} leaves no training images: validation is taken out of "
            f"data.n_train={self.n_train}; set {fifth if self.n_train >= 5 else ''}"
            "data.n_val=0 for none",
        )
