"""The server as a Flower ServerApp: samples devices, packs them onto cohort nodes, aggregates
what the strategy shares, evaluates the global model where one exists, and writes every device's
row to the run's sink.

Each node replies with the weighted mean of its devices' shared part and their total weight, so
Flower's own strategies (FedAvg, FedAvgM, FedProx, FedAdam) average exactly as if every device
were its own node. Per-device rows travel in the reply and go through our recorder into
`<sink>/rows.jsonl`, which works whether the ServerApp runs as a thread of `miet-fed simulate`
or as a process of `flwr run`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid, ServerApp

from miet_fed.federation import checkpoint, flower_compat
from miet_fed.federation.actor import feature_source
from miet_fed.federation.client_app import init_network
from miet_fed.federation.cohorts import Registry, pack, sample_devices
from miet_fed.federation.device_store import DeviceStore
from miet_fed.federation.global_eval import GlobalEval
from miet_fed.federation.recorder import Recorder
from miet_fed.federation.sharing import extract, record_nbytes
from miet_fed.federation.spec import RunSpec, load_spec
from miet_fed.federation.strategies import FedStrategy, get_strategy
from miet_fed.federation.task_heads import average_within_tasks
from miet_fed.federation.tasks import task_key

KILL_ACTOR_ENV = "MIET_FED_KILL_ACTOR_AFTER_ROUND"  # fault injection for tests


def make_flower_strategy(
    strategy: FedStrategy,
    spec: RunSpec,
    recorder: Recorder,
    order: dict[int, int],
    registry: Registry,
) -> Any:
    """The strategy's Flower class, fed cohorts: our device sampling and packing, one message
    per busy node, per-device rows recorded, replies aggregated in a fixed order."""
    base = strategy.flower_cls
    fed, seed = spec.config.fed, spec.config.run.seed
    nodes = sorted(order, key=lambda n: order[n])  # node ids by partition id
    sizes = {
        "train": [len(t) for t in spec.clients_train],
        "evaluate": [
            spec.held(d) - len(t) + (len(t) if strategy.eval_needs_train else 0)
            for d, t in enumerate(spec.clients_train)
        ],
    }
    sent: dict[str, dict[int, list[int]]] = {"train": {}, "evaluate": {}}

    def plan(phase: str, server_round: int) -> dict[int, dict[str, Any]]:
        devices = sample_devices(seed, server_round, phase, fed.num_clients, fed.sampled)
        packed = pack(devices, [sizes[phase][d] for d in devices], len(nodes))
        sent[phase] = {nodes[j]: ds for j, ds in enumerate(packed) if ds}
        return {node: registry.message_fields(ds) for node, ds in sent[phase].items()}

    def ordered(phase: str, replies: Any) -> list[Message]:
        """Replies arrive in completion order; sort them by their devices (reproducible sums)."""
        first = {node: ds[0] for node, ds in sent[phase].items()}
        return sorted(replies, key=lambda m: first.get(int(m.metadata.src_node_id), 1 << 62))

    class Cohorts(base):  # type: ignore[misc, valid-type]
        def configure_train(self, server_round, arrays, config, grid):  # noqa: ANN001
            self.miet_current = arrays  # the heads a multi-task round did not train keep these
            p = plan("train", server_round)
            view = flower_compat.NodesView(grid, sorted(p))
            messages = super().configure_train(server_round, arrays, config, view) if p else []
            return flower_compat.per_node(messages, p, self.configrecord_key, "configure_train")

        def configure_evaluate(self, server_round, arrays, config, grid):  # noqa: ANN001
            p = plan("evaluate", server_round)
            view = flower_compat.NodesView(grid, sorted(p))
            messages = super().configure_evaluate(server_round, arrays, config, view) if p else []
            return flower_compat.per_node(messages, p, self.configrecord_key, "configure_evaluate")

        def aggregate_train(self, server_round, replies):  # noqa: ANN001
            replies = ordered("train", replies)
            rows = recorder.replies("train", server_round, replies, sent["train"])
            registry.update(server_round, rows)
            # A node whose every device failed replies with weight 0 and no arrays.
            trained = [m for m in replies if m.has_error() or _weight(m) > 0]
            if not any(not m.has_error() for m in trained):
                return None, None  # nothing to aggregate: the global model stays
            if spec.tasks:
                average_within_tasks(trained, self.miet_current)
            arrays, metrics = super().aggregate_train(server_round, trained)
            return as_float32(arrays), metrics

        def aggregate_evaluate(self, server_round, replies):  # noqa: ANN001
            replies = ordered("evaluate", replies)
            rows = recorder.replies("evaluate", server_round, replies, sent["evaluate"])
            registry.update(server_round, rows)
            return super().aggregate_evaluate(server_round, replies)

    return Cohorts(
        fraction_train=1.0,  # of the nodes it is shown: those with devices this round
        fraction_evaluate=1.0,
        min_train_nodes=1,
        min_evaluate_nodes=1,
        min_available_nodes=1,
        **strategy.flower_kwargs(fed),
    )


def _weight(msg: Message) -> float:
    return float(msg.content["metrics"]["num-examples"])


def as_float32(arrays: ArrayRecord | None) -> ArrayRecord | None:
    """Flower's FedOpt strategies return float64 arrays; the edge network is float32, and
    sending it float64 would double the downlink for nothing."""
    if arrays is None:
        return None
    return ArrayRecord(
        {
            k: Array(v.numpy().astype(np.float32)) if v.dtype == "float64" else v
            for k, v in arrays.items()
        }
    )


def map_nodes(grid: Grid, num_nodes: int, timeout: float = 120.0) -> dict[int, int]:
    """Wait until every node registered, then ask each for its partition id (Flower draws
    node ids at random; packing by partition id makes reruns identical)."""
    start = time.perf_counter()
    while len(nodes := list(grid.get_node_ids())) < num_nodes:
        if time.perf_counter() - start > timeout:
            raise RuntimeError(f"only {len(nodes)} of {num_nodes} nodes registered")
        time.sleep(0.2)
    messages = [
        Message(RecordDict({}), dst_node_id=n, message_type=MessageType.QUERY) for n in nodes
    ]
    order = {}
    for reply in grid.send_and_receive(messages, timeout=timeout):
        if not reply.has_error():
            order[int(reply.metadata.src_node_id)] = int(reply.content["info"]["client"])
    return order


WORKER_LOST = "ActorUnavailableError"  # Flower's error reason names Ray's exception class


def send_and_receive(grid: Grid, messages: list[Message], timeout: float) -> list[Message]:
    """Flower's send-and-receive, re-sending once each message whose Ray worker was lost (killed,
    or restarting when Flower handed it the message): those never ran to the end, and a node's
    work is idempotent (per-device state is written by round). A message that loses its worker
    twice is a failure."""
    sent = list(messages)
    replies = list(grid.send_and_receive(messages=sent, timeout=timeout))
    by_node = {int(m.metadata.dst_node_id): m for m in sent}
    lost = [r for r in replies if r.has_error() and WORKER_LOST in str(r.error.reason)]
    if not lost:
        return replies
    again = []
    for reply in lost:
        old = by_node[int(reply.metadata.src_node_id)]
        again.append(
            Message(
                content=old.content,
                dst_node_id=old.metadata.dst_node_id,
                message_type=old.metadata.message_type,
                group_id=old.metadata.group_id,
            )
        )
    kept = [r for r in replies if all(r is not x for x in lost)]
    return kept + list(grid.send_and_receive(messages=again, timeout=timeout))


def run_rounds(
    strategy: Any,
    grid: Grid,
    arrays: ArrayRecord,
    first_round: int,
    num_rounds: int,
    train_config: ConfigRecord,
    evaluate_config: ConfigRecord,
    evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None],
    end_round: Callable[[int, ArrayRecord], None],
    timeout: float = 3600,
) -> ArrayRecord:
    """Flower's `Strategy.start` loop, able to start after round 1 (a resumed run) and to
    checkpoint at the end of each round: configure, send, aggregate train; the same for
    evaluate; then the server-side evaluation of the global model."""
    if first_round == 1:
        evaluate_fn(0, arrays)
    for server_round in range(first_round, num_rounds + 1):
        messages = strategy.configure_train(server_round, arrays, train_config, grid)
        replies = send_and_receive(grid, list(messages), timeout)
        aggregated, _ = strategy.aggregate_train(server_round, replies)
        if aggregated is not None:
            arrays = aggregated
        messages = strategy.configure_evaluate(server_round, arrays, evaluate_config, grid)
        replies = send_and_receive(grid, list(messages), timeout)
        strategy.aggregate_evaluate(server_round, replies)
        evaluate_fn(server_round, arrays)
        end_round(server_round, arrays)
    return arrays


def run_server(grid: Grid, spec_path: str) -> None:
    started = time.perf_counter()  # the run's clock (rounds.csv's elapsed_seconds) starts here
    spec = load_spec(spec_path)
    flower_compat.quick_pulls(grid, spec.num_nodes)
    order = map_nodes(grid, spec.num_nodes)
    strategy = get_strategy(spec.config.fed.strategy)
    source = feature_source(spec_path)
    recorder = Recorder(spec, order, started)
    registry = Registry(spec.config.fed.num_clients)
    store = DeviceStore(spec.state_dir)
    nets = [init_network(spec, t) for t in range(max(1, len(spec.tasks)))]
    initial = initial_arrays(spec, nets, strategy.share)
    measure = GlobalEval(spec, nets, source, strategy.global_model)

    def global_eval(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        row: dict[str, Any] = {
            "round": server_round,
            "phase": "server",
            "params_bytes": record_nbytes(arrays),
            "elapsed_seconds": recorder.elapsed(),  # since the server started: s/round
        }
        row |= measure(server_round, arrays)
        global_acc = row.get("global_acc")
        recorder.write(row)
        recorder.end_round(server_round, global_acc)
        if os.environ.get(KILL_ACTOR_ENV) == str(server_round):
            source.kill()  # fault injection: the next round must be served by a restarted actor
        return MetricRecord({"global_acc": global_acc}) if global_acc is not None else None

    flower = make_flower_strategy(strategy, spec, recorder, order, registry)
    arrays, first_round = initial, 1
    if spec.resume_round:  # a killed run's last complete round: go on from there
        arrays, rows, server_state, devices = checkpoint.load_server(
            spec.checkpoint, spec.resume_round
        )
        flower_compat.restore_state(flower, server_state)
        registry.restore(devices)
        recorder.restore(rows)
        first_round = spec.resume_round + 1

    def end_round(server_round: int, arrays: ArrayRecord) -> None:
        if spec.checkpoint and not recorder.countable.get(server_round, True):
            print(
                f"miet-fed: round {server_round} is not checkpointed (no device trained, or a "
                "loss was not finite); a resume redoes it",
                file=sys.stderr,
            )
            return  # the last committed round's device states stay: a resume needs them
        if spec.checkpoint:
            state = flower_compat.strategy_state(flower, strategy.server_state)
            checkpoint.save_server(
                spec.checkpoint, server_round, arrays, state, registry.state(), recorder.path
            )
        for device, old_round in registry.superseded:  # committed: older versions can go
            store.drop(device, old_round)
        registry.superseded.clear()

    run_rounds(
        flower,
        grid,
        arrays,
        first_round,
        spec.config.fed.rounds,
        ConfigRecord({"spec": spec_path}),
        ConfigRecord({"spec": spec_path}),
        global_eval,
        end_round,
    )
    stats = source.stats()
    stats["via_actor"] = source.via_actor
    (Path(spec.sink) / "backbone_stats.json").write_text(json.dumps(stats))


def initial_arrays(spec: RunSpec, nets: list[Any], share: str) -> ArrayRecord:
    """Round 1's global state: the shared part of the (first task's) network; with tasks, each
    task's shared head under `<task>/<key>`, the body once."""
    record = extract(nets[0], share)
    if not spec.tasks:
        return record
    head = set(nets[0].head_keys())
    out = {k: v for k, v in record.items() if k not in head}
    for task, net in zip(spec.tasks, nets, strict=True):
        own = extract(net, share)
        out |= {task_key(task.name, k): v for k, v in own.items() if k in head}
    return ArrayRecord(out)


def make_server_app(spec_path: str) -> ServerApp:
    """The ServerApp of one prepared run (`miet-fed simulate`, the benchmarks); `flwr run .`
    uses `miet_fed.federation.flwr_app`, which prepares the run itself first."""
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        run_server(grid, spec_path)

    return server
