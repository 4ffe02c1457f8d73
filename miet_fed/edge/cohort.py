"""A cohort: the devices one node trains together in a round, and the verbs strategies use.

A strategy's local update is written once against this interface (`fit`, `evaluate`, `copy`)
and means the same for one device or ten thousand: each device keeps its own data, its own
generator (seeded per run, round and device) and its own named model states ("slots": the
network "net", Ditto's personal model, FedBABU's fine-tuned copy). The engine is either a loop
of `train.fit` over the devices (the reference path) or `stacked.fit_stacked` over chunks of
devices sorted by data size (so padding wastes little under label skew). Nothing here knows
about Flower.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from miet_fed.edge import stacked
from miet_fed.edge.networks import EdgeNetwork
from miet_fed.edge.train import Optim, evaluate, evaluate_many, fit

State = dict[str, torch.Tensor]
NET = "net"
PARTS = ("all", "body", "head")
#: Decoded payload bytes one stacked step may hold (devices x batch x payload), so memory stays
#: bounded whatever the cohort size; on CPU a few devices per step is also the fastest (cache),
#: on a GPU as many as fit.
STACK_BYTES = 64 << 20
GPU_STACK_BYTES = 2 << 30
CPU_STACK_SAMPLES = 64
CPU_FULL_BATCH = 16  # measured: at batch 16 one device per step (the loop) is fastest on CPU


@dataclass
class DeviceData:
    """One device's payloads (in their wire encoding) and labels."""

    x_train: dict[str, torch.Tensor]
    y_train: torch.Tensor
    x_test: dict[str, torch.Tensor]
    y_test: torch.Tensor


@dataclass
class Cohort:
    """Devices of one node in one round. `slots[name][i]` is device i's state of that model."""

    net: EdgeNetwork  # the architecture (its own values are scratch)
    devices: list[int]
    data: list[DeviceData]
    slots: dict[str, list[State | None]]
    received: State  # the global (shared) state this round started from
    optim: Optim
    generators: list[torch.Generator]
    fed: object  # FedConfig: the strategies' own knobs
    engine: str = "stacked"  # "stacked" or "loop" (the reference path)
    stack: int = 0  # devices per stacked step (0: automatic)
    device: str = "cpu"  # where stacked steps run (a GPU takes a whole cohort per step)

    def __post_init__(self) -> None:
        if self.engine == "stacked" and not stacked.stackable(self.net):
            self.engine = "loop"  # the network declared no batched form

    def __len__(self) -> int:
        return len(self.devices)

    # --- the verbs ----------------------------------------------------------------------------

    def keys(self, part: str) -> list[str]:
        if part == "all":
            return list(self.net.state_dict())
        if part == "body":
            return self.net.body_keys()
        if part == "head":
            return self.net.head_keys()
        raise ValueError(f"unknown part '{part}'; valid: {', '.join(PARTS)}")

    def has(self, slot: str) -> list[bool]:
        return [s is not None for s in self.slots.get(slot, [None] * len(self))]

    def copy(self, src: str, dst: str, only_missing: bool = False) -> None:
        """dst := src per device (only where dst is missing, with only_missing)."""
        old = self.slots.get(dst, [None] * len(self))
        self.slots[dst] = [
            o if only_missing and o is not None else {k: v.clone() for k, v in s.items()}
            for s, o in zip(self.slots[src], old, strict=True)
        ]

    def fit(
        self, slot: str = NET, part: str = "all", epochs: int | None = None, prox_mu: float = 0.0
    ) -> list[tuple[float, float]]:
        """Train `part` of each device's `slot` on its own data; (loss, acc) per device."""
        optim = self.optim if epochs is None else replace(self.optim, epochs=epochs)
        prox = (self.received, prox_mu) if prox_mu > 0 else None
        states = self.slots[slot]
        if self.engine == "loop":
            return [self._fit_one(i, slot, part, optim, prox) for i in range(len(self))]
        out: list[tuple[float, float]] = [(float("nan"), float("nan"))] * len(self)
        for chunk in self._chunks([len(d.y_train) for d in self.data], optim.batch_size):
            if len(chunk) == 1 and self.device == "cpu":  # nothing to stack: the plain loop
                out[chunk[0]] = self._fit_one(chunk[0], slot, part, optim, prox)
                continue
            new, res = stacked.fit_stacked(
                self.net,
                stacked.stack([states[i] for i in chunk], self.device),
                [self.data[i].x_train for i in chunk],
                [self.data[i].y_train for i in chunk],
                optim,
                [self.generators[i] for i in chunk],
                self.keys(part),
                prox,
            )
            for j, (i, state) in enumerate(
                zip(chunk, stacked.unstack(new, len(chunk)), strict=True)
            ):
                states[i], out[i] = state, res[j]
        return out

    def evaluate(self, slot: str = NET, fallback: str | None = None) -> list[tuple[float, float]]:
        """(loss, acc) of each device's `slot` on its own test split (`fallback` where a device
        has no such state yet)."""
        states = [
            s if s is not None else self.slots[fallback][i]
            for i, s in enumerate(self.slots.get(slot, [None] * len(self)))
        ]
        if self.engine == "loop":
            return [
                self._evaluate_one(state, d) for state, d in zip(states, self.data, strict=True)
            ]
        out = [(float("nan"), float("nan"))] * len(self)
        sizes = [len(d.y_test) for d in self.data]
        if self.device == "cpu":  # devices holding the very same model: one batched forward
            for group in _same_model(states, [self._shape(i) for i in range(len(self))]):
                self.net.load_state_dict(states[group[0]])
                d = [self.data[i] for i in group]
                res = evaluate_many(self.net, [x.x_test for x in d], [x.y_test for x in d])
                for i, r in zip(group, res, strict=True):
                    out[i], sizes[i] = r, 0
        for chunk in self._chunks(sizes, 256):
            if len(chunk) == 1 and self.device == "cpu":
                out[chunk[0]] = self._evaluate_one(states[chunk[0]], self.data[chunk[0]])
                continue
            res = stacked.evaluate_stacked(
                self.net,
                stacked.stack([states[i] for i in chunk], self.device),
                [self.data[i].x_test for i in chunk],
                [self.data[i].y_test for i in chunk],
            )
            for j, i in enumerate(chunk):
                out[i] = res[j]
        return out

    # --- internals ----------------------------------------------------------------------------

    def _fit_one(
        self, i: int, slot: str, part: str, optim: Optim, prox: tuple | None
    ) -> tuple[float, float]:
        """`train.fit` on device i alone (the reference path, and a chunk of one on CPU)."""
        d = self.data[i]
        self.net.load_state_dict(self.slots[slot][i])
        params = self._params(part)
        result = fit(self.net, d.x_train, d.y_train, optim, self.generators[i], params, prox)
        self.slots[slot][i] = _copy(self.net.state_dict())
        return result

    def _evaluate_one(self, state: State, d: DeviceData) -> tuple[float, float]:
        self.net.load_state_dict(state)
        return evaluate(self.net, d.x_test, d.y_test)

    def _params(self, part: str) -> list[torch.nn.Parameter]:
        if part == "all":
            return list(self.net.parameters())
        return self.net.head_parameters() if part == "head" else self.net.body_parameters()

    def _sample_bytes(self) -> int:
        """Decoded (float32) bytes of one payload (the largest, where a plan mixes formats)."""
        shapes = [self._shape(i) for i in range(len(self))]
        return 4 * max((math.prod(shape) for shape in shapes if shape), default=1)

    def _shape(self, i: int) -> tuple[int, ...]:
        """Device i's payload shape per image: devices of a payload plan differ in tokens, and
        only devices of one shape share a stacked step."""
        d = self.data[i]
        for parts in (d.x_train, d.x_test):
            if parts:
                return tuple(parts["values"].shape[1:])
        return ()

    def _chunks(self, sizes: Sequence[int], batch: int) -> list[list[int]]:
        """Devices with data, grouped by payload shape and sorted by size (similar sizes pad
        little), in stacked steps."""
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i in range(len(sizes)):
            by_shape.setdefault(self._shape(i), []).append(i)
        if len(by_shape) == 1:
            return self._chunks_of(sizes, batch)
        out = []
        for shape in sorted(by_shape):
            mine = by_shape[shape]
            chunks = self._chunks_of([sizes[i] for i in mine], batch)
            out += [[mine[j] for j in chunk] for chunk in chunks]
        return out

    def _chunks_of(self, sizes: Sequence[int], batch: int) -> list[list[int]]:
        """`_chunks` for devices of one payload shape."""
        order = sorted((i for i, n in enumerate(sizes) if n), key=lambda i: (sizes[i], i))
        if not order:
            return []
        width = max(1, min(batch, max(sizes)))
        budget = STACK_BYTES if self.device == "cpu" else GPU_STACK_BYTES
        by_bytes = max(1, budget // max(1, self._sample_bytes() * width))
        if self.stack:
            n = self.stack
        elif self.device != "cpu":
            n = len(order)
        else:  # measured on CPU: full batches run fastest alone, small ones stacked to ~64
            n = 1 if width >= CPU_FULL_BATCH else max(1, CPU_STACK_SAMPLES // width)
        n = min(n, by_bytes)
        return [order[i : i + n] for i in range(0, len(order), n)]


def _same_model(states: Sequence[State], shapes: Sequence[tuple]) -> list[list[int]]:
    """Groups of 2+ devices whose states are the same tensors (not equal values: the same
    objects, as when every device evaluates the model it received) and whose payloads have the
    same shape (one batch holds them), in device order."""
    groups: dict[tuple, list[int]] = {}
    for i, (s, shape) in enumerate(zip(states, shapes, strict=True)):
        groups.setdefault((shape, *((k, id(v)) for k, v in s.items())), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def _copy(state: State) -> State:
    return {k: v.detach().clone() for k, v in state.items()}
