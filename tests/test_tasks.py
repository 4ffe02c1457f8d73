"""Multi-task federations (`[[data.tasks]]`): config, data, the backbone over several datasets,
heads averaged within their task, nodes that keep each device to its own task, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)

from miet_fed.config import SimulateConfig, TuneConfig, build_config, load_config, to_toml
from miet_fed.errors import MietError
from miet_fed.results import run_identity
from tests.conftest import brightness_npz, make_tiny_npz

MODEL = {"name": "vit_tiny_patch16_224", "weights": "random", "img_size": 32, "k": 3}


def _tasks(tmp_path: Path) -> list[dict]:
    tiny = make_tiny_npz(tmp_path / "tiny.npz")
    bright = brightness_npz(tmp_path / "bright.npz", 90, 1)
    return [
        {"name": "stripes", "dataset": f"npz:{tiny}", "num_clients": 3, "n_train": 60,
         "n_test": 30},
        {"dataset": f"npz:{bright}", "num_clients": 2, "n_train": 40, "n_test": 30,
         "partition": "iid"},
        {"dataset": "digits", "num_clients": 3, "n_train": 90, "n_test": 60},
    ]  # fmt: skip


def _config(tmp_path: Path, **fed) -> SimulateConfig:
    data = {
        "model": MODEL,
        "data": {"tasks": _tasks(tmp_path)},
        "fed": {"num_clients": 8, "rounds": 2, **fed},
        "train": {"epochs": 1},
        "run": {"progress": False},
    }
    return build_config(SimulateConfig, data)


# --- config ----------------------------------------------------------------------------------


def test_task_tables_load_round_trip_and_leave_old_identities_alone(tmp_path):
    cfg = _config(tmp_path)
    assert [t.label for t in cfg.data.tasks] == ["stripes", "bright", "digits"]
    path = tmp_path / "back.toml"
    path.write_text(to_toml(cfg))
    assert load_config(SimulateConfig, path, {}) == cfg  # [[data.tasks]] as inline tables
    plain = SimulateConfig()
    (tmp_path / "plain.toml").write_text(to_toml(plain))
    again = load_config(SimulateConfig, tmp_path / "plain.toml", {})
    assert run_identity("simulate", again) == run_identity("simulate", plain)
    assert run_identity("simulate", plain) == "e4f8afb7d6d1e8b5"  # the default's, as before
    assert run_identity("simulate", cfg) != run_identity("simulate", plain)
    from miet_fed.api import build  # a notebook passes the tables as a list of dicts

    built = build("simulate", overrides={"data.tasks": _tasks(tmp_path), "fed.num_clients": 8})
    assert built.data.tasks == cfg.data.tasks


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t[1].update(name="stripes"), "both named 'stripes'"),
        (lambda t: t[0].update(num_clients=0), r"data.tasks\[1\].num_clients must be >= 1"),
        (lambda t: t[2].pop("dataset"), "has no dataset"),
        (lambda t: t[0].update(partition="zipf"), "unknown data.tasks\\[1\\].partition 'zipf'"),
        (lambda t: t[0].update(name="a b"), "must be letters, digits"),
        (lambda t: t[0].update(colour=1), r"unknown key 'data.tasks\[1\].colour'"),
    ],
)
def test_bad_task_lists_are_one_line_errors(tmp_path, change, message):
    tasks = _tasks(tmp_path)
    change(tasks)
    data = {"data": {"tasks": tasks}, "fed": {"num_clients": 8}}
    with pytest.raises(MietError, match=message) as exc:
        build_config(SimulateConfig, data)
    assert "\n" not in str(exc.value)


def test_task_lists_must_agree_with_the_rest_of_the_config(tmp_path):
    tasks = _tasks(tmp_path)
    with pytest.raises(MietError, match="set fed.num_clients=8"):
        build_config(SimulateConfig, {"data": {"tasks": tasks}, "fed": {"num_clients": 5}})
    with pytest.raises(MietError, match="data.dataset is not used with"):
        build_config(
            SimulateConfig,
            {"data": {"tasks": tasks, "dataset": "digits"}, "fed": {"num_clients": 8}},
        )
    with pytest.raises(MietError, match="only simulate uses"):
        build_config(TuneConfig, {"data": {"tasks": tasks}})
    from miet_fed.config import parse_overrides

    with pytest.raises(MietError, match="list of tables"):
        build_config(SimulateConfig, parse_overrides(["data.tasks=digits"]))


# --- data ------------------------------------------------------------------------------------


def test_each_device_holds_only_its_own_tasks_images_and_labels(tmp_path):
    from miet_fed.federation.tasks import load_tasks, task_of_devices, task_of_images

    cfg = _config(tmp_path)
    data = load_tasks(cfg)
    assert [t.name for t in data.tasks] == ["stripes", "bright", "digits"]
    assert [t.num_devices for t in data.tasks] == [3, 2, 3]
    assert [c.client for c in data.clients] == list(range(8))
    owner = task_of_devices(data.tasks, np.arange(8))
    assert owner.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    for client, task in zip(data.clients, owner, strict=True):
        info = data.tasks[task]
        ids = np.concatenate([client.train, client.test])
        assert (task_of_images(data.tasks, ids) == task).all()
        assert ids.min() >= info.offset and ids.max() < info.offset + info.images
        assert data.labels[ids].max() < info.num_classes
    table = data.partitions
    assert table["task"].tolist() == [data.tasks[t].name for t in owner]
    assert (table.loc[table.task != "digits", [f"label_{k}" for k in range(3, 10)]] == 0).all(
        axis=None
    )
    assert (
        task_of_images(data.tasks, data.global_test) == np.repeat([0, 1, 2], [30, 30, 60])
    ).all()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t[1].update(dataset="npz:/nowhere/x.npz"), "task 'x': npz file not found"),
        (
            lambda t: t[0].update(num_clients=40),
            "task 'stripes': dirichlet partition could not give each of 40",
        ),
    ],
)
def test_a_task_without_data_fails_before_any_backbone_work(tmp_path, capsys, change, message):
    """A missing dataset or a task whose devices would hold no data: one line, exit 2, nothing
    written, no backbone built (the model name would not even resolve)."""
    from miet_fed.cli import main

    tasks = _tasks(tmp_path)
    change(tasks)
    n = sum(t["num_clients"] for t in tasks)
    cfg = {"data": {"tasks": tasks}, "fed": {"num_clients": n}, "model": MODEL}
    path = tmp_path / "bad.toml"
    path.write_text(to_toml(build_config(SimulateConfig, cfg)))
    assert main(["simulate", str(path), "--out", "results/bad", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not Path("results/bad").exists()


# --- the backbone over several datasets ------------------------------------------------------


def test_one_backbone_serves_every_task_in_the_run_id_space(tmp_path):
    from miet_fed.cloud.service import FeatureService
    from miet_fed.cloud.tasks import TaskFeatures
    from miet_fed.config import ModelConfig
    from miet_fed.data import load_dataset

    model = ModelConfig(**MODEL)
    a = load_dataset(f"npz:{make_tiny_npz(tmp_path / 'a.npz')}")
    b = load_dataset(f"npz:{brightness_npz(tmp_path / 'b.npz', 30, 2)}")
    both = TaskFeatures(model, [a, b], tmp_path / "cache", progress=False)
    ids = np.array([121, 3, 149, 0, 120])  # b's 1 and 29, a's 3 and 0, b's 0
    assert both.missing(ids).tolist() == [0, 3, 120, 121, 149]
    assert both.ensure(ids) == 5 and both.stats()["backbone_builds"] == 1  # one model
    got = both.features(ids)
    alone = FeatureService(model, b.images, b.fingerprint, tmp_path / "cache", False)
    mine = alone.features(np.array([1, 29, 0]))  # the same cache entry: no forward
    assert alone.forwards == 0
    for k, v in got.items():
        torch.testing.assert_close(v[[0, 2, 4]], mine[k])
    with pytest.raises(MietError, match="image ids must lie in 0..149"):
        both.features(np.array([150]))


# --- heads averaged within their task --------------------------------------------------------


def _reply(node: int, body: float, heads: dict[str, float], weights: dict[str, int]) -> Message:
    arrays = {"body": Array(np.full(2, body, np.float32))}
    arrays |= {f"{t}/head": Array(np.full(3, v, np.float32)) for t, v in heads.items()}
    metrics = {"num-examples": sum(weights.values())}
    metrics |= {f"task-weight:{t}": weights.get(t, 0) for t in ("a", "b", "c")}
    content = RecordDict({"arrays": ArrayRecord(arrays), "metrics": MetricRecord(metrics)})
    return Message(content, dst_node_id=node, message_type=MessageType.TRAIN)


@pytest.mark.parametrize("name", ["fedavg", "fedprox"])
def test_flowers_average_of_rescaled_replies_is_each_heads_mean_within_its_task(name, flower_run):
    """Flower's own FedAvg over the rescaled replies: the body is the mean over all devices,
    each head the mean over its task's devices only, and a head no device trained stays."""
    from miet_fed.config import FedConfig
    from miet_fed.federation.strategies import get_strategy
    from miet_fed.federation.task_heads import average_within_tasks

    current = ArrayRecord(
        {"body": Array(np.zeros(2, np.float32))}
        | {f"{t}/head": Array(np.full(3, 9.0, np.float32)) for t in "abc"}
    )
    replies = [
        _reply(1, 1.0, {"a": 2.0, "b": 4.0}, {"a": 10, "b": 30}),
        _reply(2, 3.0, {"a": 6.0}, {"a": 30}),
    ]
    average_within_tasks(replies, current)
    s = get_strategy(name)
    flower = s.flower_cls(**s.flower_kwargs(FedConfig(strategy=name)))
    arrays, _ = flower.aggregate_train(1, replies)
    body = (1.0 * 40 + 3.0 * 30) / 70
    np.testing.assert_allclose(arrays["body"].numpy(), body, rtol=1e-6)
    np.testing.assert_allclose(arrays["a/head"].numpy(), (2.0 * 10 + 6.0 * 30) / 40, rtol=1e-6)
    np.testing.assert_allclose(arrays["b/head"].numpy(), 4.0, rtol=1e-6)  # one node's task
    np.testing.assert_allclose(arrays["c/head"].numpy(), 9.0, rtol=1e-6)  # untrained: kept


# --- a node keeps each device to its own task ------------------------------------------------


def test_a_node_trains_each_device_on_its_own_task_only(tmp_path, flower_run):
    """A message naming devices of all three tasks: each task's devices form their own cohort
    with their task's label space, receive only their task's head, are fed the payloads of
    their own images; the reply averages each head within its task."""
    from miet_fed.federation import client_app
    from miet_fed.federation.actor import BackboneServer
    from miet_fed.federation.runner import _write_spec, backbone_datasets

    cfg = _config(tmp_path, strategy="fedavg")
    prep, spec_path = _write_spec(cfg, tmp_path, "", 0)
    spec = prep.spec
    local = BackboneServer(cfg.model, backbone_datasets(cfg), spec.cache_root, False)
    local.ensure(prep.used_ids)
    from miet_fed.federation.server_app import initial_arrays

    nets = [client_app.init_network(spec, t) for t in range(3)]
    arrays = initial_arrays(spec, nets, "all")
    assert {k.split("/")[0] for k in arrays if "/" in k} == {"stripes", "bright", "digits"}
    devices = [0, 4, 5, 1, 7]
    config = ConfigRecord(
        {
            "spec": str(spec_path),
            "server-round": 1,
            "devices": devices,
            "last-rounds": [0] * 5,
            "first-contact": [1] * 5,
        }
    )
    msg = Message(
        RecordDict({"config": config, "arrays": arrays}),
        dst_node_id=1,
        message_type=MessageType.TRAIN,
    )
    call = client_app.NodeCall(msg, "train")
    cohorts = call.cohorts(need_train=True)
    assert [c.devices for _, c in cohorts] == [[0, 1], [4], [5, 7]]
    for (_, cohort), classes in zip(cohorts, (3, 3, 10), strict=True):
        head = cohort.net.state_dict()[cohort.net.head_keys()[-1]]
        assert head.shape[0] == classes
        assert set(cohort.received) == set(cohort.net.state_dict())  # no other task's head
        for d, data in zip(cohort.devices, cohort.data, strict=True):
            assert data.y_train.max() < classes and data.y_test.max() < classes
            own = local.features(spec.clients_train[d])
            torch.testing.assert_close(data.x_train["values"], own["values"])
    reply = client_app.train(msg, None)
    metrics = reply.content["metrics"]
    assert [metrics[f"task-weight:{t}"] for t in ("stripes", "bright", "digits")] == [
        len(spec.clients_train[0]) + len(spec.clients_train[1]),
        len(spec.clients_train[4]),
        len(spec.clients_train[5]) + len(spec.clients_train[7]),
    ]
    rows = json.loads(reply.content["rows"]["json"])
    assert sorted(r["client"] for r in rows) == sorted(devices)
    up = {r["client"]: r["params_up_bytes"] for r in rows}
    assert up[0] == up[1] == up[4] < up[5] == up[7]  # a device uploads its own task's network
    head = nets[2].head_keys()[-1]  # the head's output layer (bias): 10 vs 3 classes
    sent = reply.content["arrays"]
    assert sent[f"digits/{head}"].shape[0] == 10 and sent[f"bright/{head}"].shape[0] == 3


# --- end to end ------------------------------------------------------------------------------


def test_tune_tunes_one_network_per_task(tmp_path, capsys):
    from miet_fed.cli import main

    tasks = [{k: v for k, v in t.items() if k in ("name", "dataset", "n_train", "n_test")}
             for t in _tasks(tmp_path)]  # fmt: skip
    cfg = build_config(
        TuneConfig,
        {"model": MODEL, "data": {"tasks": tasks, "n_val": 10}, "train": {"epochs": 3}},
    )
    path = tmp_path / "tune.toml"
    path.write_text(to_toml(cfg))
    assert main(["tune", str(path), "--out", "results/t", "--quiet", "--json"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert s["tasks"] == ["stripes", "bright", "digits"]
    per = s["per_task"]
    assert [per[t]["n_train"] for t in s["tasks"]] == [50, 30, 80]
    assert s["test_acc"] == pytest.approx(np.mean([per[t]["test_acc"] for t in s["tasks"]]))
    assert per["digits"]["trainable_params"] > per["stripes"]["trainable_params"]  # 10 vs 3
    metrics = pd.read_csv("results/t/metrics.csv")
    assert metrics.task.unique().tolist() == s["tasks"] and len(metrics) == 9
    assert all(Path(f"results/t/tasks/{t}/log.txt").exists() for t in s["tasks"])
    from miet_fed.report.document import make_report

    report = make_report(Path("results/t"))
    table = pd.read_csv(report.parent / "per_task.csv")
    assert table.task.tolist() == s["tasks"] and "Each task" in report.read_text()


@pytest.mark.slow
def test_a_three_task_federation_end_to_end(tmp_path, capsys):
    """Flower + Ray, three tasks packed onto cohort nodes, devices holding out validation
    images: the same results and ledger as one device per node, ledger equal to the model (each
    task with its own images' size and head, validation images counted), a task column and
    per-task accuracies."""
    from miet_fed.cli import main

    def run(out: str, devices_per_node: int) -> dict:
        cfg = _config(
            tmp_path, strategy="fedavg", devices_per_node=devices_per_node, val_fraction=0.25
        )
        path = tmp_path / f"{out}.toml"
        path.write_text(to_toml(cfg))
        assert main(["simulate", str(path), "--out", f"results/{out}", "--quiet", "--json"]) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    from miet_fed.federation.ray_setup import ray_session

    with ray_session():  # both runs on one Ray instance and backbone actor
        s = run("mt", 4)  # two cohort nodes, tasks mixed on each
        one = run("one", 1)  # the reference path: one device per node
    a = pd.read_csv("results/one/clients.csv").sort_values(["round", "client"])
    b = pd.read_csv("results/mt/clients.csv").sort_values(["round", "client"])
    assert set(a.node) == set(range(8)) and set(b.node) == {0, 1}
    np.testing.assert_allclose(a.train_loss, b.train_loss, atol=1e-3)
    for col, n in (("personal_val_acc", "n_val"), ("personal_acc", "n_test")):
        done = b[col].notna()  # within one image of each device's split
        assert (a[col].notna() == done).all()
        assert ((a[col] - b[col]).abs()[done] <= 1 / b[n][done] + 1e-9).all()
    pd.testing.assert_frame_equal(
        pd.read_csv("results/one/ledger.csv"), pd.read_csv("results/mt/ledger.csv")
    )
    assert one["per_task"].keys() == s["per_task"].keys()
    # fed.val_fraction: validation every round, the test splits once, after the last round
    assert b.personal_val_acc.notna().all() and (b.n_val > 0).all()
    assert (
        b[b["round"] < 2].personal_acc.isna().all()
        and b[b["round"] == 2].personal_acc.notna().all()
    )
    rounds = pd.read_csv("results/mt/rounds.csv").set_index("round")
    assert rounds.global_val_acc.notna().all() and rounds.global_acc.notna().tolist() == [0, 0, 1]
    assert s["validation"] and s["personal_val_acc"] is not None
    assert s["ledger_equals_model"], (s["bytes_by_kind"], s["model_bytes_by_kind"])
    assert s["failures"] == 0 and s["backbone_builds"] == 1
    assert s["tasks"] == ["stripes", "bright", "digits"]
    assert set(s["per_task"]) == set(s["tasks"])
    accs = [s["per_task"][t]["global_acc"] for t in s["tasks"]]
    assert s["global_acc"] == pytest.approx(np.mean(accs))
    clients = pd.read_csv("results/mt/clients.csv")
    parts = pd.read_csv("results/mt/partitions.csv").set_index("client")
    assert (clients.task == parts.loc[clients.client, "task"].values).all()
    rounds = pd.read_csv("results/mt/rounds.csv")
    assert {f"global_acc[{t}]" for t in s["tasks"]} <= set(rounds.columns)
    # a device's upload is its task's network: digits' head has 10 outputs, the others 3
    up = clients.groupby("task").params_up_bytes.first()
    assert up["digits"] > up["stripes"] == up["bright"]
    from miet_fed.report.document import make_report

    report = make_report(Path("results/mt"))  # per-task table; validation curves drawn
    assert (report.parent / "per_task.csv").is_file()
    assert (report.parent / "accuracy_per_round.png").is_file()
