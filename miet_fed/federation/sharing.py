"""Partial sharing in one place: which keys of an edge network cross the network.

A strategy names a part ("all", "body", "head" or "none"); clients send and receive only those keys,
and keep the rest in their persistent state. FedPer/FedRep/FedBABU share the body, LG-FedAvg the
head, FedAvg-like strategies everything, `local` nothing. A node replies with its devices'
weighted mean of that part (`shared_mean`; with tasks, heads per task: `task_shared_mean`).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

from miet_fed.edge.networks import EdgeNetwork
from miet_fed.federation.tasks import task_key

if TYPE_CHECKING:
    from miet_fed.edge.cohort import Cohort
    from miet_fed.federation.spec import RunSpec

PARTS = ("all", "body", "head", "none")


def shared_keys(net: EdgeNetwork, part: str) -> list[str]:
    if part == "all":
        return list(net.state_dict())
    if part == "body":
        return net.body_keys()
    if part == "head":
        return net.head_keys()
    if part == "none":
        return []
    raise ValueError(f"unknown shared part '{part}'; valid: {', '.join(PARTS)}")


def state_to_record(state: dict[str, torch.Tensor], keys: list[str] | None = None) -> ArrayRecord:
    keys = list(state) if keys is None else keys
    return ArrayRecord({k: Array(state[k].detach().cpu().numpy().copy()) for k in keys})


def record_to_state(record: ArrayRecord) -> dict[str, torch.Tensor]:
    # Arrays that arrive through Ray are read-only: copy before torch may write to them.
    return {k: torch.from_numpy(np.array(v.numpy(), copy=True)) for k, v in record.items()}


def extract(net: EdgeNetwork, part: str) -> ArrayRecord:
    """The shared part of `net` as Flower arrays (what the client uploads)."""
    return state_to_record(net.state_dict(), shared_keys(net, part))


def record_nbytes(record: ArrayRecord) -> int:
    """Tensor bytes of an ArrayRecord: elements x itemsize, what the cost model prices."""
    return sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize for a in record.values())


def record_wire_bytes(record: ArrayRecord) -> int:
    """Bytes of the record as Flower serializes it (protobuf of .npy-encoded arrays)."""
    from flwr.common.serde import array_record_to_proto

    return array_record_to_proto(record).ByteSize()


def record_digest(record: ArrayRecord) -> int:
    """A 48-bit fingerprint of the arrays (fits a float metric exactly): equal arrays, equal id."""
    h = hashlib.sha256()
    for key in sorted(record):
        h.update(key.encode())
        h.update(record[key].data)
    return int(h.hexdigest()[:12], 16)


def shared_mean(
    net: EdgeNetwork, states: list[dict[str, torch.Tensor]], weights: list[int], part: str
) -> ArrayRecord:
    """The cohort's weighted mean of the shared part: with its total weight, FedAvg over nodes
    equals FedAvg over devices."""
    keys = shared_keys(net, part)
    return state_to_record(weighted_mean(states, weights, keys), keys)


def weighted_mean(
    states: list[dict[str, torch.Tensor]], weights: list[int], keys: list[str]
) -> dict[str, torch.Tensor]:
    """Weighted mean of `keys` over `states`, summed in float64."""
    w = torch.tensor(weights, dtype=torch.float64) / float(sum(weights))
    mean = {}
    for k in keys:  # 64 devices per product (bounded memory), blocks summed in float64
        acc = torch.zeros(states[0][k].shape, dtype=torch.float64)
        for i in range(0, len(states), 64):
            block = torch.stack([s[k] for s in states[i : i + 64]])
            acc += torch.tensordot(w[i : i + 64].to(block.dtype), block, 1)
        mean[k] = acc.float()
    return mean


def task_shared_mean(
    spec: RunSpec, cohorts: list[tuple[list[int], Cohort]], weights: list[int], part: str
) -> tuple[ArrayRecord, dict[str, int]]:
    """A multi-task node's shared part: the shared body averaged over all its devices, each
    task's shared head over that task's devices (as `<task>/<key>`), and each task's weight
    (`task_heads.WEIGHT`), so the server averages heads within tasks."""
    body, mean, task_weights = [], {}, {}
    states: list[dict[str, torch.Tensor]] = []
    all_weights: list[int] = []
    for mine, cohort in cohorts:
        keys = shared_keys(cohort.net, part)
        head = set(cohort.net.head_keys())
        body = [k for k in keys if k not in head]
        w = [weights[i] for i in mine]
        name = spec.tasks[spec.task_index(cohort.devices[0])].name
        heads = [k for k in keys if k in head]
        if heads:
            own = weighted_mean(cohort.slots["net"], w, heads)
            mean |= {task_key(name, k): v for k, v in own.items()}
        task_weights[name] = int(sum(w))
        states += cohort.slots["net"]
        all_weights += w
    if body:
        mean |= weighted_mean(states, all_weights, body)
    return state_to_record(mean), task_weights
