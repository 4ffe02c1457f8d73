"""The edge side as a Flower ClientApp: one cohort node trains the devices the server names.

A message names a node's sampled devices (with the round of each one's newest saved state and
whether this is its first contact). The node rebuilds them from the run spec and the device
store, fetches their payloads in one call (kept for the run in this process), runs the
strategy's local update over the whole cohort (stacked, or a loop when `fed.devices_per_node` is
1, the reference path), saves what each device keeps, and replies with one weighted mean of the
shared part plus one row per device. Every byte in a row is what that device would have sent or
received as its own Flower node, so the ledger is the same whatever the packing. With tasks,
each task's devices are their own cohort (`sharing.task_shared_mean` averages heads per task).
"""

from __future__ import annotations

import json
import os
import signal
import time
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from miet_fed.comm import codec
from miet_fed.edge.cohort import Cohort, DeviceData
from miet_fed.edge.networks import EdgeNetwork, build_edge_network
from miet_fed.edge.train import Optim
from miet_fed.federation.actor import feature_source
from miet_fed.federation.device_store import DeviceStore
from miet_fed.federation.logs import quiet_flower
from miet_fed.federation.metric_bytes import with_own_size
from miet_fed.federation.sharing import (
    record_digest,
    record_nbytes,
    record_to_state,
    record_wire_bytes,
    shared_keys,
    shared_mean,
    state_to_record,
    task_shared_mean,
)
from miet_fed.federation.spec import RunSpec, load_spec
from miet_fed.federation.strategies import FedStrategy, get_strategy
from miet_fed.federation.task_heads import task_weights
from miet_fed.federation.tasks import task_of_devices, task_view
from miet_fed.torch_device import resolve_device

ROWS = "rows"  # the reply's ConfigRecord holding one JSON row per device

app = ClientApp()
quiet_flower()  # in the worker processes that run clients


def client_seed(run_seed: int, server_round: int, client: int) -> int:
    """Independent, reproducible stream per (run, round, device)."""
    return int(np.random.SeedSequence([run_seed, server_round, client]).generate_state(1)[0])


def init_network(spec: RunSpec, task: int = 0) -> EdgeNetwork:
    """Same seed on server and devices: shared init, and one common frozen head for FedBABU.
    A multi-task run's devices build their task's label space (`task`)."""
    torch.manual_seed(spec.config.run.seed)
    return build_edge_network(
        spec.config.edge.name,
        spec.payload_kind,
        spec.payload_shape,
        spec.classes_of(task),
        spec.config.edge,
    )


@lru_cache(maxsize=16)
def _template(spec_path: str, task: int = 0) -> tuple[EdgeNetwork, dict[str, torch.Tensor]]:
    """The architecture and initial state of a task's network, built once per process and run."""
    net = init_network(load_spec(spec_path), task)
    return net, {k: v.detach().clone() for k, v in net.state_dict().items()}


_NONE = np.zeros(0, dtype=np.int64)


@lru_cache(maxsize=16)
def _run_images(spec_path: str, fmt: str = "") -> np.ndarray:
    """Every image any device of the run holds (what a node process keeps for the run), once
    each, device after device (train, validation, test): each device's payloads are then a
    view. With a payload plan, only the devices served in format `fmt`."""
    spec = load_spec(spec_path)
    parts = [
        (spec.clients_train[d], spec.val_of(d), spec.clients_test[d])
        for d in range(len(spec.clients_train))
        if spec.format_of(d) == fmt
    ]
    ids = np.concatenate([_NONE, *(i for part in parts for i in part)])
    _, first = np.unique(ids, return_index=True)
    return ids[np.sort(first)]


FAULT_ENV = "MIET_FED_INJECT_FAULT"  # "device:round[:kill][,...]": fail there (tests)


def _maybe_fail(client: int, server_round: int) -> None:
    """Fault injection for reliability tests: a device that raises mid-round, or whose node's
    worker process is killed (SIGKILL, as the OOM killer would), on purpose."""
    wanted = {w.strip() for w in os.environ.get(FAULT_ENV, "").split(",")}
    if f"{client}:{server_round}:kill" in wanted:
        os.kill(os.getpid(), signal.SIGKILL)
    if f"{client}:{server_round}" in wanted:
        raise RuntimeError(f"injected fault in client {client}, round {server_round}")


class NodeCall:
    """One message to a cohort node: its devices, rebuilt, and what they report."""

    def __init__(self, msg: Message, phase: str) -> None:
        self.t0 = time.perf_counter()
        config = msg.content["config"]
        self.spec_path = str(config["spec"])
        self.spec = load_spec(self.spec_path)
        self.round = int(config["server-round"])
        self.phase = phase
        self.strategy: FedStrategy = get_strategy(self.spec.config.fed.strategy)
        self.received_record: ArrayRecord = msg.content["arrays"]
        self.received = record_to_state(self.received_record)
        self.store = DeviceStore(self.spec.state_dir)
        self.rows: list[dict[str, Any]] = []
        devices = [int(d) for d in config["devices"]]
        last = [int(r) for r in config["last-rounds"]]
        first = [bool(f) for f in config["first-contact"]]
        self.devices, self.last, self.first = [], [], []
        for d, r, f in zip(devices, last, first, strict=True):
            try:
                if phase == "train":
                    _maybe_fail(d, self.round)
            except Exception as exc:  # one device failing is its own row, not the node's
                self.rows.append({"client": d, "error": f"{type(exc).__name__}: {exc}"[:300]})
                continue
            self.devices.append(d)
            self.last.append(r)
            self.first.append(f)

    def cohorts(self, need_train: bool, split: str = "test") -> list[tuple[list[int], Cohort]]:
        """The node's devices as one cohort per task (one in all, without tasks): each with
        the positions of its devices in `self.devices`. Evaluation reads the devices' `split`
        ("test", or "val" with `fed.val_fraction`) as their `x_test`."""
        spec = self.spec
        held_out = spec.val_of if split == "val" else (lambda d: spec.clients_test[d])
        fetch_train = [need_train or f for f in self.first]
        parts = [
            spec.clients_train[d] if t else _NONE
            for d, t in zip(self.devices, fetch_train, strict=True)
        ]
        parts += [held_out(d) for d in self.devices]
        views = self._fetch(parts)
        n = len(self.devices)
        data, saved = [], []
        for i, (d, r, t) in enumerate(zip(self.devices, self.last, fetch_train, strict=True)):
            train_ids, test_ids = spec.clients_train[d], held_out(d)
            data.append(
                DeviceData(
                    x_train=views[i] if t else {},
                    y_train=torch.from_numpy(spec.labels[train_ids]),
                    x_test=views[n + i],
                    y_test=torch.from_numpy(spec.labels[test_ids]),
                )
            )
            saved.append(self.store.load(d, r))
        self.t_fetch = time.perf_counter()
        groups: dict[int, list[int]] = {}  # one task lookup for the whole node
        for i, task in enumerate(task_of_devices(spec.tasks, np.asarray(self.devices)).tolist()):
            groups.setdefault(task, []).append(i)
        return [
            (mine, self._cohort(task, mine, data, saved)) for task, mine in sorted(groups.items())
        ]

    def _cohort(
        self, task: int, mine: list[int], data: list[DeviceData], saved: list[dict[str, Any]]
    ) -> Cohort:
        cfg = self.spec.config
        net, init = _template(self.spec_path, task)
        received = self.received_by_task(task)
        slots: dict[str, list[Any]] = {"net": []}
        for i in mine:
            own = dict(saved[i])
            slots["net"].append({**init, **own.pop("net", {}), **received})
            for name in self.strategy.personal_slots:
                slots.setdefault(name, []).append(own.get(name))
        devices = [self.devices[i] for i in mine]
        return Cohort(
            net=net,
            devices=devices,
            data=[data[i] for i in mine],
            slots=slots,
            received=received,
            optim=Optim(
                cfg.train.epochs,
                cfg.train.batch_size,
                cfg.train.lr,
                cfg.train.weight_decay,
                schedule="constant",
            ),
            generators=[
                torch.Generator().manual_seed(client_seed(cfg.run.seed, self.round, d))
                for d in devices
            ],
            fed=cfg.fed,
            engine="loop" if cfg.fed.devices_per_node == 1 else "stacked",
            stack=cfg.fed.stack,
            device=str(resolve_device(cfg.edge.device, "edge.device")),
        )

    def received_by_task(self, task: int) -> dict[str, torch.Tensor]:
        """What a device of `task` received: the shared keys and its own task's head, under the
        network's own key names (everything received, without tasks)."""
        return task_view(self.received, self.spec.tasks[task].name if self.spec.tasks else "")

    def _fetch(self, parts: list[np.ndarray]) -> list[dict[str, torch.Tensor]]:
        """Each part's payloads (the devices' train parts, then their test parts): one fetch per
        payload format in the cohort (one in all, without a plan); each device's data is a
        view of the node's table of its format."""
        formats = [self.spec.format_of(d) for d in self.devices] * 2
        views: list[dict[str, torch.Tensor]] = [{}] * len(parts)
        for fmt in dict.fromkeys(formats):
            mine = [i for i, f in enumerate(formats) if f == fmt]
            source = feature_source(self.spec_path, fmt)
            got = source.kept_parts([parts[i] for i in mine], _run_images(self.spec_path, fmt))
            for i, v in zip(mine, got, strict=True):
                views[i] = v
        return views

    def device_rows(
        self, cohorts: list[tuple[list[int], Cohort]], values: list[dict[str, Any]]
    ) -> None:
        """One row per device: its metrics and every byte it sent or received (as its own
        Flower node would: the shared part of its own task's network)."""
        spec = self.spec
        n = len(self.devices)
        per_device = (time.perf_counter() - self.t0) / n  # the node's time, shared out
        for mine, cohort in cohorts:
            task = spec.task_index(cohort.devices[0])
            down_record = (
                state_to_record(self.received_by_task(task)) if spec.tasks else self.received_record
            )
            down = {
                "params_down_bytes": record_nbytes(down_record),
                "params_down_wire_bytes": record_wire_bytes(down_record),
            }
            image_bytes = spec.tasks[task].image_bytes if spec.tasks else spec.image_bytes
            for j, i in enumerate(mine):
                data = cohort.data[j]
                contact = {"images_up_bytes": 0, "features_down_bytes": 0}
                if self.first[i]:  # every image it holds goes up, and its payload down, once
                    d, n_test = self.devices[i], len(data.y_test)
                    rest = spec.held(d) - len(data.y_train)  # validation and test images
                    contact = {
                        "images_up_bytes": spec.held(d) * image_bytes,
                        "features_down_bytes": codec.nbytes(data.x_train)
                        + codec.nbytes(data.x_test) // n_test * rest,
                    }
                row = {"client": self.devices[i], **values[i], **contact, **down}
                self.rows.append(with_own_size(row | {"seconds": per_device}))

    def reply(
        self,
        msg: Message,
        arrays: ArrayRecord | None,
        weight: int,
        extra: dict[str, int] | None = None,
    ) -> Message:
        metrics = {"num-examples": weight, "devices": len(self.devices), **(extra or {})}
        content = RecordDict(
            {
                "metrics": MetricRecord(metrics),
                ROWS: ConfigRecord({"json": json.dumps(self.rows)}),
            }
        )
        if arrays is not None:
            content["arrays"] = arrays
        return Message(content, reply_to=msg)


PROFILE_ENV = "MIET_FED_PROFILE"  # a folder: each node call's cProfile stats go there


def profiled(fn: Any) -> Any:
    """Developer aid: with MIET_FED_PROFILE set, dump each call's profile (in Ray workers too)."""

    def wrapper(msg: Message, context: Context) -> Message:
        folder = os.environ.get(PROFILE_ENV)
        if not folder:
            return fn(msg, context)
        import cProfile

        prof = cProfile.Profile()
        try:
            return prof.runcall(fn, msg, context)
        finally:
            os.makedirs(folder, exist_ok=True)
            prof.dump_stats(os.path.join(folder, f"{fn.__name__}-{os.getpid()}-{time.time_ns()}"))

    wrapper.__name__ = fn.__name__
    return wrapper


@app.train()
@profiled
def train(msg: Message, context: Context) -> Message:
    call = NodeCall(msg, "train")
    if not call.devices:  # every device failed before training: only their failure rows
        return call.reply(msg, ArrayRecord(), 0)
    cohorts = call.cohorts(need_train=True)
    t_setup = time.perf_counter()
    n = len(call.devices)
    results: list[Any] = [None] * n
    for mine, cohort in cohorts:
        for i, r in zip(mine, call.strategy.local_update(cohort), strict=True):
            results[i] = r
    t_update = time.perf_counter()
    share = call.strategy.share
    saved = [0] * n
    weights = [0] * n
    same: list[dict[str, Any]] = [{}] * n
    digest = record_digest(call.received_record)
    for mine, cohort in cohorts:
        personal = set(cohort.keys("all")) - set(shared_keys(cohort.net, share))
        # Every device of a task uploads the same shapes; protobuf/.npy sizes depend on shapes.
        up = state_to_record(cohort.slots["net"][0], shared_keys(cohort.net, share))
        sizes = {
            "params_up_bytes": record_nbytes(up),
            "params_up_wire_bytes": record_wire_bytes(up),
            "received_digest": digest,
        }
        for j, i in enumerate(mine):
            d = call.devices[i]
            slots = {"net": {k: v for k, v in cohort.slots["net"][j].items() if k in personal}}
            for name in call.strategy.personal_slots:
                if cohort.slots.get(name) and cohort.slots[name][j] is not None:
                    slots[name] = cohort.slots[name][j]
            saved[i] = call.store.save(d, call.round, slots)
            weights[i] = len(cohort.data[j].y_train)
            same[i] = sizes
    extra: dict[str, int] = {}
    if call.spec.tasks:
        arrays, per_task = task_shared_mean(call.spec, cohorts, weights, share)
        extra = task_weights(call.spec, per_task)
    else:
        ((_, cohort),) = cohorts
        arrays = shared_mean(cohort.net, cohort.slots["net"], weights, share)
    values = [
        {
            "num-examples": weights[i],
            "train_loss": float(results[i][0]),
            "train_acc": float(results[i][1]),
            **same[i],
            "state_saved": int(saved[i]),
            "setup_seconds": (t_setup - call.t0) / n,
            "update_seconds": (t_update - t_setup) / n,
        }
        for i in range(n)
    ]
    call.device_rows(cohorts, values)
    return call.reply(msg, arrays, int(sum(weights)), extra)


@app.evaluate()
@profiled
def evaluate(msg: Message, context: Context) -> Message:
    """Personal accuracy of each device's deployed model: on its test split, or with
    `fed.val_fraction` on its validation split every round and its test split after the last."""
    call = NodeCall(msg, "evaluate")
    splits = ["test"]
    if call.spec.clients_val:
        splits = ["val", "test"] if call.round == call.spec.config.fed.rounds else ["val"]
    values: list[dict[str, Any]] = [{} for _ in call.devices]
    cohorts: list[tuple[list[int], Cohort]] = []
    for split in splits:
        prefix = "personal_val" if split == "val" else "personal"
        cohorts = call.cohorts(need_train=call.strategy.eval_needs_train, split=split)
        for mine, cohort in cohorts:
            results = call.strategy.personal_eval(cohort)
            for j, (i, (loss, acc)) in enumerate(zip(mine, results, strict=True)):
                n = len(cohort.data[j].y_test)
                values[i].setdefault("num-examples", 0)  # test images evaluated (n_test)
                values[i]["num-examples" if split == "test" else "n_val"] = n
                values[i] |= {f"{prefix}_loss": float(loss), f"{prefix}_acc": float(acc)}
    call.device_rows(cohorts, values)
    weight = sum(v["num-examples"] + v.get("n_val", 0) for v in values)
    return call.reply(msg, None, int(weight))


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Tell the server which node this is (its partition id), for a reproducible packing."""
    info = MetricRecord({"client": int(context.node_config["partition-id"])})
    return Message(RecordDict({"info": info}), reply_to=msg)


__all__ = ["ROWS", "app", "client_seed", "init_network"]
