"""The server side of per-task heads: a shared body is averaged over every device, a task's
head only over the devices of that task.

Flower's strategies (FedAvg, FedAvgM, FedProx, FedAdam) average every key of the replies with
one weight per reply. A multi-task node replies with its body mean, each of its tasks' head
mean (`<task>/<key>`) and each task's weight (`task-weight:<task>` metrics). Before Flower
aggregates, each reply's head of task t is rescaled by (its task-t weight / its weight) x
(total weight / task-t weight over all replies): Flower's weighted mean then is exactly the mean
over task t's devices, while the body's mean is untouched. A head no reply trained this round
is sent back unchanged: its mean is the current head, a zero pseudo-gradient for a server
optimizer (FedAdam's or FedAvgM's momentum from earlier rounds may still move it, as it would
any parameter whose update is zero).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord

from miet_fed.federation.tasks import split_key

WEIGHT = "task-weight:"  # metric key prefix: a node's training weight on one task


def task_weights(spec: Any, per_task: dict[str, int]) -> dict[str, int]:
    """A node's weight on every task of the run (0 where it trained none of its devices): every
    reply carries the same metric keys, as Flower's metric averaging expects."""
    return {WEIGHT + t.name: int(per_task.get(t.name, 0)) for t in spec.tasks}


def average_within_tasks(replies: list[Any], current: ArrayRecord) -> None:
    """Rescale the task keys of the (error-free) train `replies`, in place, so that Flower's
    weighted mean of each head is its mean over its own task's devices."""
    ok = [m for m in replies if not m.has_error()]
    weight = [float(m.content["metrics"]["num-examples"]) for m in ok]
    total = sum(weight)
    task_keys = [k for k in current if split_key(k)[0]]
    if not ok or not task_keys or not total:
        return
    names = {split_key(k)[0] for k in task_keys}
    per_task = {n: sum(float(m.content["metrics"][WEIGHT + n]) for m in ok) for n in names}
    for m, w in zip(ok, weight, strict=True):
        record = m.content["arrays"]
        out = {k: v for k, v in record.items() if not split_key(k)[0]}
        for key in task_keys:
            name = split_key(key)[0]
            now = current[key].numpy()
            mine = float(m.content["metrics"][WEIGHT + name])
            if not per_task[name]:  # no device of this task trained: its head stays
                value = now
            elif not mine:
                value = np.zeros_like(now)
            else:
                value = record[key].numpy() * (mine / w) * (total / per_task[name])
            out[key] = Array(np.asarray(value, dtype=now.dtype))
        m.content["arrays"] = ArrayRecord(out)
