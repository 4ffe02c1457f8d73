"""The run spec: everything a ClientApp or ServerApp process needs to know about a simulation.

The runner writes it once as JSON (config, partitions, paths); apps in any process (threads of
`run_simulation`, Ray workers, `flwr run` subprocesses) read it by path.
It is plain data, no pickle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from miet_fed.config import SimulateConfig, build_config
from miet_fed.federation.tasks import TaskInfo, task_of_devices
from miet_fed.files import write_text

ACTOR_NAME = "miet-fed-backbone"
NAMESPACE = "miet_fed"


@dataclass(frozen=True, eq=False)
class RunSpec:
    config: SimulateConfig
    cache_root: str
    sink: str  # folder where the server appends per-round rows
    clients_train: list[np.ndarray]
    clients_test: list[np.ndarray]
    global_test: np.ndarray
    labels: np.ndarray  # label of every image id of the dataset
    num_classes: int
    payload_kind: str
    payload_shape: tuple[int, ...]
    image_bytes: int  # one raw image as the device holds it (uint8), uploaded once
    feature_bytes: int  # one image's encoded payload, downloaded once
    actor: str = ACTOR_NAME
    namespace: str = NAMESPACE
    checkpoint: str = ""  # absolute checkpoint folder ('' = off), see federation.checkpoint
    resume_round: int = 0  # rounds 1..resume_round were completed by an earlier, killed run
    num_nodes: int = 1  # Flower nodes the devices are packed onto (cohorts)
    state_dir: str = ""  # absolute device-store folder (federation.device_store)
    #: each device's payload format (`plan.formats`; '' = the cloud's cached format), or empty
    #: without a plan
    formats: tuple[str, ...] = ()
    #: the tasks of a multi-task run (`[[data.tasks]]`), or empty (miet_fed.federation.tasks)
    tasks: tuple[TaskInfo, ...] = ()
    #: each device's validation ids (`fed.val_fraction`), or empty without validation
    clients_val: list[np.ndarray] = field(default_factory=list)

    def format_of(self, device: int) -> str:
        return self.formats[device] if self.formats else ""

    def val_of(self, device: int) -> np.ndarray:
        """The device's validation ids (none without `fed.val_fraction`)."""
        return self.clients_val[device] if self.clients_val else np.zeros(0, np.int64)

    def held(self, device: int) -> int:
        """Images the device holds (uploads once): train, validation and test."""
        return (
            len(self.clients_train[device])
            + len(self.val_of(device))
            + len(self.clients_test[device])
        )

    def task_index(self, device: int) -> int:
        """Index of the device's task (0 without tasks)."""
        return int(task_of_devices(self.tasks, np.array([device]))[0])

    def task_name(self, device: int) -> str:
        """The device's task ('' without tasks)."""
        return self.tasks[self.task_index(device)].name if self.tasks else ""

    def classes_of(self, task: int) -> int:
        return self.tasks[task].num_classes if self.tasks else self.num_classes

    def save(self, path: Path) -> None:
        from miet_fed.config import to_dict

        data: dict[str, Any] = {
            "config": to_dict(self.config),
            "cache_root": self.cache_root,
            "sink": self.sink,
            "clients_train": [a.tolist() for a in self.clients_train],
            "clients_test": [a.tolist() for a in self.clients_test],
            "global_test": self.global_test.tolist(),
            "labels": self.labels.tolist(),
            "num_classes": self.num_classes,
            "payload_kind": self.payload_kind,
            "payload_shape": list(self.payload_shape),
            "image_bytes": self.image_bytes,
            "feature_bytes": self.feature_bytes,
            "actor": self.actor,
            "namespace": self.namespace,
            "checkpoint": self.checkpoint,
            "resume_round": self.resume_round,
            "num_nodes": self.num_nodes,
            "state_dir": self.state_dir,
            "formats": list(self.formats),
            "tasks": [t.to_dict() for t in self.tasks],
            "clients_val": [a.tolist() for a in self.clients_val],
        }
        write_text(path, json.dumps(data))


@lru_cache(maxsize=4)
def load_spec(path: str) -> RunSpec:
    """Read once per process and path: the spec is shared read-only data, not per-client state."""
    data = json.loads(Path(path).read_text())
    arr = lambda xs: np.asarray(xs, dtype=np.int64)  # noqa: E731
    return RunSpec(
        config=build_config(SimulateConfig, data["config"], path),
        cache_root=data["cache_root"],
        sink=data["sink"],
        clients_train=[arr(a) for a in data["clients_train"]],
        clients_test=[arr(a) for a in data["clients_test"]],
        global_test=arr(data["global_test"]),
        labels=arr(data["labels"]),
        num_classes=data["num_classes"],
        payload_kind=data["payload_kind"],
        payload_shape=tuple(data["payload_shape"]),
        image_bytes=data["image_bytes"],
        feature_bytes=data["feature_bytes"],
        actor=data["actor"],
        namespace=data["namespace"],
        checkpoint=data.get("checkpoint", ""),
        resume_round=int(data.get("resume_round", 0)),
        num_nodes=int(data.get("num_nodes", 1)),
        state_dir=data.get("state_dir", ""),
        formats=tuple(data.get("formats", ())),
        tasks=tuple(TaskInfo(**t) for t in data.get("tasks", ())),
        clients_val=[arr(a) for a in data.get("clients_val", ())],
    )
