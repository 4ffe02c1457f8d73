"""The edge client as a Flower ClientApp (Message API): one simulated device per supernode.

Each call rebuilds the device from the run spec and its persistent `context.state` (Flower reuses
ClientApp objects and worker processes across clients, so nothing per client lives in globals):
its partition, its edge network with the personal part it kept, and its payloads fetched from the
cloud backbone actor. Only the part the strategy shares crosses the network.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.serde import metric_record_to_proto

from miet_fed.comm import codec
from miet_fed.edge.networks import EdgeNetwork, build_edge_network
from miet_fed.edge.train import Optim
from miet_fed.federation import checkpoint
from miet_fed.federation.actor import feature_source
from miet_fed.federation.logs import quiet_flower
from miet_fed.federation.sharing import (
    extract,
    load_shared,
    record_digest,
    record_nbytes,
    record_to_state,
    record_wire_bytes,
    state_to_record,
)
from miet_fed.federation.spec import RunSpec, load_spec
from miet_fed.federation.strategies import LocalJob, get_strategy

NET = "net"  # context.state key of the client's full edge network
CONTACTED = "contacted"  # context.state key: the device already uploaded images, got features
EXTRA = "extra/"  # prefix of strategy-specific persisted states (Ditto's personal model)

app = ClientApp()
quiet_flower()  # in the worker processes that run clients


def client_seed(run_seed: int, server_round: int, client: int) -> int:
    """Independent, reproducible stream per (run, round, client)."""
    return int(np.random.SeedSequence([run_seed, server_round, client]).generate_state(1)[0])


def init_network(spec: RunSpec) -> EdgeNetwork:
    """Same seed on server and clients: shared init, and one common frozen head for FedBABU."""
    torch.manual_seed(spec.config.run.seed)
    return build_edge_network(
        spec.config.edge.name,
        spec.payload_kind,
        spec.payload_shape,
        spec.num_classes,
        spec.config.edge,
    )


def _job(
    msg: Message, context: Context, need_train: bool = True
) -> tuple[LocalJob, RunSpec, int, ArrayRecord]:
    """Rebuild this device for one call; training payloads are fetched only when needed (the
    first contact always fetches everything: that is the device's one download)."""
    spec = load_spec(str(msg.content["config"]["spec"]))
    server_round = int(msg.content["config"]["server-round"])
    client = int(context.node_config["partition-id"])
    strategy = get_strategy(spec.config.fed.strategy)
    if spec.resume_round and CONTACTED not in context.state:
        _restore(context, spec, client)
    net = init_network(spec)
    if NET in context.state:
        net.load_state_dict(record_to_state(context.state[NET]))
    received_record = msg.content["arrays"]
    load_shared(net, received_record, strategy.share)
    extra = {
        key[len(EXTRA) :]: record_to_state(context.state[key])
        for key in context.state.array_records
        if key.startswith(EXTRA)
    }
    source = feature_source(str(msg.content["config"]["spec"]))
    train_ids, test_ids = spec.clients_train[client], spec.clients_test[client]
    cfg = spec.config
    job = LocalJob(
        net=net,
        x_train=source.features(train_ids) if need_train or CONTACTED not in context.state else {},
        y_train=torch.from_numpy(spec.labels[train_ids]),
        x_test=source.features(test_ids),
        y_test=torch.from_numpy(spec.labels[test_ids]),
        received=record_to_state(received_record),
        optim=Optim(
            cfg.train.epochs,
            cfg.train.batch_size,
            cfg.train.lr,
            cfg.train.weight_decay,
            schedule="constant",
        ),
        generator=torch.Generator().manual_seed(client_seed(cfg.run.seed, server_round, client)),
        fed=cfg.fed,
        extra=extra,
    )
    return job, spec, client, received_record


def _restore(context: Context, spec: RunSpec, client: int) -> None:
    """A resumed run: this device's state as the killed run left it after `resume_round`."""
    records, contact_round = checkpoint.load_client(spec.checkpoint, client, spec.resume_round)
    for key, record in records.items():
        context.state[key] = record
    if contact_round:
        context.state[CONTACTED] = ConfigRecord({"round": contact_round})


def _first_contact(
    context: Context, job: LocalJob, spec: RunSpec, client: int, server_round: int
) -> dict[str, int]:
    """Images go up and features come down once per device: the edge caches its payloads."""
    if CONTACTED in context.state:
        return {"images_up_bytes": 0, "features_down_bytes": 0}
    context.state[CONTACTED] = ConfigRecord({"round": server_round})
    if spec.checkpoint:
        checkpoint.mark_contact(spec.checkpoint, client, server_round)
    n_images = len(job.y_train) + len(job.y_test)
    return {
        "images_up_bytes": n_images * spec.image_bytes,
        "features_down_bytes": codec.nbytes(job.x_train) + codec.nbytes(job.x_test),
    }


def _with_own_size(values: dict) -> MetricRecord:
    """A MetricRecord that also reports its own serialized size (protobuf, as Flower sends it)."""
    values = {**values, "metrics_up_bytes": 0}
    for _ in range(3):  # the size field's own varint can change the size: iterate to a fixpoint
        values["metrics_up_bytes"] = metric_record_to_proto(MetricRecord(values)).ByteSize()
    return MetricRecord(values)


def _persist(
    context: Context, job: LocalJob, spec: RunSpec, client: int, server_round: int
) -> None:
    """Keep the device's state for its next round (and on disk, when the run checkpoints)."""
    context.state[NET] = state_to_record(job.net.state_dict())
    for key, state in job.extra.items():
        context.state[EXTRA + key] = state_to_record(state)
    if spec.checkpoint:
        records = {k: context.state[k] for k in context.state.array_records}
        checkpoint.save_client(spec.checkpoint, client, server_round, records)


FAULT_ENV = "MIET_FED_INJECT_FAULT"  # "client:round[:kill][,...]": fail there (tests)


def _maybe_fail(client: int, server_round: int) -> None:
    """Fault injection for reliability tests: a client that raises mid-round, or whose worker
    process is killed (SIGKILL, as the OOM killer would), on purpose."""
    wanted = {w.strip() for w in os.environ.get(FAULT_ENV, "").split(",")}
    if f"{client}:{server_round}:kill" in wanted:
        os.kill(os.getpid(), signal.SIGKILL)
    if f"{client}:{server_round}" in wanted:
        raise RuntimeError(f"injected fault in client {client}, round {server_round}")


@app.train()
def train(msg: Message, context: Context) -> Message:
    start = time.perf_counter()
    job, spec, client, received = _job(msg, context)
    server_round = int(msg.content["config"]["server-round"])
    _maybe_fail(client, server_round)
    strategy = get_strategy(spec.config.fed.strategy)
    t_setup = time.perf_counter()
    loss, acc = strategy.local_update(job)
    t_update = time.perf_counter()
    _persist(context, job, spec, client, server_round)
    arrays = extract(job.net, strategy.share)
    metrics = _with_own_size(
        {
            "num-examples": len(job.y_train),
            "client": client,
            "train_loss": float(loss),
            "train_acc": float(acc),
            **_first_contact(context, job, spec, client, server_round),
            "params_down_bytes": record_nbytes(received),
            "params_down_wire_bytes": record_wire_bytes(received),
            "received_digest": record_digest(received),
            "params_up_bytes": record_nbytes(arrays),
            "params_up_wire_bytes": record_wire_bytes(arrays),
            "seconds": time.perf_counter() - start,
            "setup_seconds": t_setup - start,  # rebuild the device, fetch its payloads
            "update_seconds": t_update - t_setup,  # local training
        }
    )
    return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    spec = load_spec(str(msg.content["config"]["spec"]))
    strategy = get_strategy(spec.config.fed.strategy)
    job, spec, client, received = _job(msg, context, need_train=strategy.eval_needs_train)
    server_round = int(msg.content["config"]["server-round"])
    loss, acc = strategy.personal_eval(job)
    metrics = _with_own_size(
        {
            "num-examples": len(job.y_test),
            "client": client,
            "personal_loss": float(loss),
            "personal_acc": float(acc),
            **_first_contact(context, job, spec, client, server_round),
            "params_down_bytes": record_nbytes(received),
            "params_down_wire_bytes": record_wire_bytes(received),
        }
    )
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Tell the server which partition this node holds (for reproducible client sampling)."""
    info = MetricRecord({"client": int(context.node_config["partition-id"])})
    return Message(RecordDict({"info": info}), reply_to=msg)


__all__ = ["ArrayRecord", "app", "client_seed", "init_network"]
