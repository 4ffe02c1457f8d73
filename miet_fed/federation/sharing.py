"""Partial sharing in one place: which keys of an edge network cross the network.

A strategy names a part ("all", "body", "head" or "none"); clients send and receive only those keys,
and keep the rest in their persistent state. FedPer/FedRep/FedBABU share the body, LG-FedAvg the
head, FedAvg-like strategies everything, `local` nothing.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

from miet_fed.edge.networks import EdgeNetwork

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
