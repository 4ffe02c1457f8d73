"""Which devices take part in a round and which node trains them: plain numpy, no Flower.

Sampling is seeded per (run, round, phase) and picks devices, not nodes, so the devices that
train are the same whatever the packing (`fed.devices_per_node`). Packing spreads a round's
devices over the nodes by their work (longest first onto the least-loaded node, at most an even
share of devices each), so the round ends when the work ends, not when the unluckiest worker
does. The registry is what the server remembers per device: the round of its newest saved state
(so a node opens exactly one file per device) and whether it has had its one first contact
(images up, features down). It is two small arrays, checkpointed with the server.
"""

from __future__ import annotations

import math

import numpy as np

PHASES = {"train": 1, "evaluate": 2}


def sample_devices(seed: int, server_round: int, phase: str, total: int, sampled: int) -> list[int]:
    """`sampled` of `total` devices, sorted; all of them when sampled >= total."""
    if sampled >= total:
        return list(range(total))
    rng = np.random.default_rng(np.random.SeedSequence([seed, server_round, PHASES[phase]]))
    return sorted(int(d) for d in rng.choice(total, size=sampled, replace=False))


def pack(devices: list[int], work: list[int], nodes: int) -> list[list[int]]:
    """Devices per node (index 0..nodes-1): longest work first onto the least-loaded node, at
    most ceil(len/nodes) devices each; every node's list sorted. Empty lists for idle nodes."""
    cap = max(1, math.ceil(len(devices) / max(1, nodes)))
    load = [0] * nodes
    out: list[list[int]] = [[] for _ in range(nodes)]
    for w, d in sorted(zip(work, devices, strict=True), key=lambda t: (-t[0], t[1])):
        j = min(
            (j for j in range(nodes) if len(out[j]) < cap), key=lambda j: (load[j], len(out[j]), j)
        )
        out[j].append(d)
        load[j] += w
    return [sorted(o) for o in out]


def num_nodes(num_devices: int, devices_per_node: int, workers: int) -> int:
    """Nodes for a federation: ceil(devices / per node), or one per client worker (0 = auto)."""
    if devices_per_node:
        return math.ceil(num_devices / devices_per_node)
    return max(1, min(num_devices, workers))


class Registry:
    """Per-device memory of the server: newest saved round and first contact."""

    def __init__(self, num_devices: int) -> None:
        self.last_round = np.zeros(num_devices, dtype=np.int64)
        self.contacted = np.zeros(num_devices, dtype=np.int8)
        self.superseded: list[tuple[int, int]] = []  # (device, round) files to drop at commit

    def message_fields(self, devices: list[int]) -> dict[str, list[int]]:
        return {
            "devices": devices,
            "last-rounds": [int(self.last_round[d]) for d in devices],
            "first-contact": [int(not self.contacted[d]) for d in devices],
        }

    def update(self, server_round: int, rows: list[dict]) -> None:
        """After a phase: who contacted, whose state is now from this round."""
        for row in rows:
            if "error" in row:
                continue
            d = int(row["client"])
            self.contacted[d] = 1
            if row.get("state_saved"):
                prev = int(self.last_round[d])
                if prev and prev != server_round:
                    self.superseded.append((d, prev))
                self.last_round[d] = server_round

    def state(self) -> dict[str, np.ndarray]:
        return {"last_round": self.last_round, "contacted": self.contacted}

    def restore(self, state: dict[str, np.ndarray]) -> None:
        self.last_round = np.asarray(state["last_round"], dtype=np.int64).copy()
        self.contacted = np.asarray(state["contacted"], dtype=np.int8).copy()
