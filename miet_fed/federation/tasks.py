"""Devices with different tasks: each task's data, devices and label space, in one id space.

Task t's images are image ids `offset_t .. offset_t + len(dataset_t) - 1` of the run, its
devices the ids `first_device_t ..` (devices are numbered task after task), its labels its own
`0 .. num_classes_t - 1`. The backbone actor serves every task from one model (one cache
entry per dataset, `miet_fed.cloud.tasks`); each device builds the edge network of its task's
label space. Heads are per task: on the wire between the server and the nodes a task's head
keys are named `<task>/<key>` (`task_key`), so the server averages a head only over the devices
of its task while a shared body is averaged over every device (`miet_fed.federation.task_heads`).

A run without `[[data.tasks]]` has no tasks here (`RunSpec.tasks == ()`) and every name stays
as it was.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from miet_fed.config import SimulateConfig
from miet_fed.data import load_dataset, vtab_split
from miet_fed.data.base import short_hash
from miet_fed.errors import MietError
from miet_fed.federation.partition import ClientData, make_clients, partition_table

if TYPE_CHECKING:  # pandas loads in the driver, not in every client worker that imports this
    import pandas as pd

SEP = "/"  # task name / edge-network key (network keys never hold one)


@dataclass(frozen=True)
class TaskInfo:
    """One task as the spec carries it (plain data)."""

    name: str
    dataset: str
    offset: int  # its first image id
    images: int  # images of its dataset
    num_classes: int
    image_bytes: int  # one raw image, as its devices hold it
    first_device: int
    num_devices: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def task_key(task: str, key: str) -> str:
    return f"{task}{SEP}{key}"


def split_key(key: str) -> tuple[str, str]:
    """('task', 'head.weight') of a task's key; ('', key) of a shared one."""
    task, sep, rest = key.partition(SEP)
    return (task, rest) if sep else ("", key)


def task_view(state: dict[str, Any], task: str) -> dict[str, Any]:
    """A global state as task `task`'s network names it: the shared keys and the task's own
    head, without the task prefix (the whole state for task '', a run without tasks)."""
    if not task:
        return state
    out = {}
    for key, value in state.items():
        owner, own_key = split_key(key)
        if owner in ("", task):
            out[own_key] = value
    return out


@dataclass
class TaskData:
    """What `prepare` needs of the data, one task or many."""

    clients: list[ClientData]
    global_test: np.ndarray
    labels: np.ndarray
    num_classes: int  # the first task's (the only one's, without tasks)
    image_bytes: int
    fingerprint: str
    partitions: pd.DataFrame
    tasks: tuple[TaskInfo, ...]  # () without [[data.tasks]]
    used: np.ndarray  # every selected image id (train pools and test sets), sorted


def load_tasks(cfg: SimulateConfig) -> TaskData:
    """Every task's selection, test set and devices, in the run's id spaces. Without
    `[[data.tasks]]` this is the single-dataset federation, unchanged."""
    f = cfg.fed
    clients: list[ClientData] = []
    tests, labels, tables, infos, prints, used = [], [], [], [], [], []
    offset = 0
    for task in cfg.data.task_list:
        where = f"task {task.label!r}: " if cfg.data.tasks else ""
        try:
            ds = load_dataset(task.dataset)
            split = vtab_split(ds.labels, task.n_train, task.n_test or None, cfg.run.seed)
            mine = make_clients(
                split.train,
                ds.labels,
                task.num_clients if cfg.data.tasks else f.num_clients,
                task.partition or f.partition,
                task.alpha or f.alpha,
                task.classes_per_client or f.classes_per_client,
                f.test_fraction,
                f.min_train,
                1,
                cfg.run.seed,
            )
        except MietError as exc:
            text = str(exc)
            if cfg.data.tasks:  # the keys to change are the task's own
                for key in ("fed.num_clients", "data.n_train", "data.n_test"):
                    text = text.replace(key, f"its {key.split('.')[1]}")
            raise MietError(f"{where}{text}") from None
        first = len(clients)
        clients += [
            replace(c, client=first + c.client, train=c.train + offset, test=c.test + offset)
            for c in mine
        ]
        table = partition_table(mine, ds.labels, ds.num_classes)
        table["client"] += first
        if cfg.data.tasks:
            table.insert(1, "task", task.label)
        tables.append(table)
        tests.append(split.test + offset)
        used += [split.train + offset, split.test + offset]
        labels.append(ds.labels.astype(np.int64))
        prints.append(ds.fingerprint)
        infos.append(
            TaskInfo(
                name=task.label,
                dataset=task.dataset,
                offset=offset,
                images=len(ds.labels),
                num_classes=ds.num_classes,
                image_bytes=int(ds.images[0].nbytes),
                first_device=first,
                num_devices=len(mine),
            )
        )
        offset += len(ds.labels)
    import pandas as pd

    partitions = pd.concat(tables, ignore_index=True).fillna(0)
    label_cols = [c for c in partitions if c.startswith("label_")]
    partitions[label_cols] = partitions[label_cols].astype(int)
    return TaskData(
        clients=clients,
        global_test=np.concatenate(tests),
        labels=np.concatenate(labels),
        num_classes=infos[0].num_classes,
        image_bytes=infos[0].image_bytes,
        fingerprint=prints[0] if len(prints) == 1 else short_hash(*prints),
        partitions=partitions,
        tasks=tuple(infos) if cfg.data.tasks else (),
        used=np.unique(np.concatenate(used)),
    )


def task_of_devices(tasks: tuple[TaskInfo, ...], devices: np.ndarray) -> np.ndarray:
    """The task index of each device (all 0 without tasks)."""
    if not tasks:
        return np.zeros(len(devices), dtype=np.int64)
    starts = np.array([t.first_device for t in tasks])
    return np.searchsorted(starts, np.asarray(devices), side="right") - 1


def task_of_images(tasks: tuple[TaskInfo, ...], ids: np.ndarray) -> np.ndarray:
    """The task index of each image id (all 0 without tasks)."""
    if not tasks:
        return np.zeros(len(ids), dtype=np.int64)
    starts = np.array([t.offset for t in tasks])
    return np.searchsorted(starts, np.asarray(ids), side="right") - 1
