"""Cohorts: many devices trained as one stacked computation mean the same as each device alone.

Fast tests compare the stacked engine with the reference loop (`train.fit` per device) for every
registered edge network and every registered strategy, on tiny tensors; the slow ones run real
simulations with one device per node and with one node for all devices and compare the tables.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from miet_fed.comm import codec
from miet_fed.config import EdgeConfig, FedConfig
from miet_fed.edge import stacked, train
from miet_fed.edge.cohort import Cohort, DeviceData
from miet_fed.edge.networks import EDGE_NETWORKS, build_edge_network
from miet_fed.edge.train import Optim
from miet_fed.federation.cohorts import Registry, num_nodes, pack, sample_devices
from miet_fed.federation.device_store import DeviceStore
from miet_fed.federation.strategies import STRATEGIES, get_strategy

CFG = EdgeConfig(rank=8, blocks=2, heads=2)
SHAPES = {"tokens": (5, 16), "vector": (16,), "layers": (3, 5, 16)}
SIZES = [3, 7, 20, 1, 12]  # unequal on purpose: devices with fewer batches sit steps out


def _net(name: str, kind: str):
    torch.manual_seed(0)
    return build_edge_network(name, kind, SHAPES[kind], 3, CFG)


def _fed(strategy: str) -> FedConfig:
    """The strategy's own parameters at their defaults, with one epoch where they count epochs
    (FedRep's head, FedBABU's fine-tuning)."""
    params = STRATEGIES.get(strategy).Params
    short = {f.name: 1 for f in dataclasses.fields(params) if f.name.endswith("epochs")}
    return FedConfig(strategy=strategy, params=params(**short))


def _cohort(
    name: str,
    kind: str,
    engine: str,
    received_keys: str = "all",
    strategy: str = "fedavg",
    tokens: list[int] | None = None,
) -> Cohort:
    """`tokens`: each device's token count (a payload plan's formats differ in it)."""
    net = _net(name, kind)
    g = torch.Generator().manual_seed(1)
    data = []
    for i, n in enumerate(SIZES):
        shape = (tokens[i], *SHAPES[kind][1:]) if tokens else SHAPES[kind]
        x, xt = (
            torch.randn(n, *shape, generator=g),
            torch.randn(4, *shape, generator=g),
        )
        y, yt = torch.randint(0, 3, (n,), generator=g), torch.randint(0, 3, (4,), generator=g)
        data.append(DeviceData(codec.encode(x, "fp16"), y, codec.encode(xt, "fp16"), yt))
    init = {k: v.detach().clone() for k, v in net.state_dict().items()}
    part = {"all": list(init), "body": net.body_keys(), "head": net.head_keys()}[received_keys]
    received = {k: init[k] for k in part}
    return Cohort(
        net=net,
        devices=list(range(len(SIZES))),
        data=data,
        slots={"net": [{k: v.clone() for k, v in init.items()} for _ in SIZES]},
        received=received,
        optim=Optim(2, 4, 1e-2, 1e-2, "constant"),
        generators=[torch.Generator().manual_seed(100 + i) for i in range(len(SIZES))],
        fed=_fed(strategy),
        engine=engine,
    )


def _comparable(state: dict[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
    """All parameters except the key bias of attention: adding a constant to every key shifts
    each attention row by a constant, which softmax ignores, so its gradient is exactly zero in
    theory and float noise in practice, which Adam amplifies to lr-sized steps in either engine.
    It changes no output (the logits are compared separately)."""
    out = {}
    for k, v in state.items():
        if k.endswith("qkv.bias"):
            v = torch.cat([v[:rank], v[2 * rank :]])
        out[k] = v
    return out


def _logits(c: Cohort, slot: str = "net") -> list[torch.Tensor]:
    out = []
    for state, d in zip(c.slots[slot], c.data, strict=True):
        c.net.load_state_dict(state)
        out.append(c.net(codec.decode(d.x_test)).detach())
    return out


@pytest.mark.parametrize("name", EDGE_NETWORKS.names())
def test_every_network_has_a_stacked_forward_equal_to_its_forward(name):
    cls = EDGE_NETWORKS.get(name)
    for kind in cls.accepts:
        nets = [_net(name, kind) for _ in range(3)]
        for i, n in enumerate(nets):  # different values per device
            with torch.no_grad():
                for p in n.parameters():
                    p.add_(0.1 * (i + 1) * torch.randn_like(p))
        assert stacked.stackable(nets[0]), f"{name} declares no batched form"
        state = stacked.stack([n.state_dict() for n in nets])
        x = torch.randn(3, 4, *SHAPES[kind])
        out = nets[0].forward_stacked(state, x)
        ref = torch.stack([n(x[i]) for i, n in enumerate(nets)])
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", EDGE_NETWORKS.names())
@pytest.mark.parametrize("part", ["all", "body", "head"])
def test_stacked_fit_equals_the_loop_for_every_network(name, part):
    for kind in EDGE_NETWORKS.get(name).accepts:
        loop, stack = _cohort(name, kind, "loop"), _cohort(name, kind, "stacked")
        a, b = loop.fit(part=part, prox_mu=0.1), stack.fit(part=part, prox_mu=0.1)
        np.testing.assert_allclose(a, b, atol=1e-4)
        for sa, sb in zip(loop.slots["net"], stack.slots["net"], strict=True):
            for k, v in _comparable(sa, CFG.rank).items():
                torch.testing.assert_close(v, _comparable(sb, CFG.rank)[k], atol=1e-4, rtol=0)
        for la, lb in zip(_logits(loop), _logits(stack), strict=True):
            torch.testing.assert_close(la, lb, atol=1e-4, rtol=0)
        np.testing.assert_allclose(loop.evaluate(), stack.evaluate(), atol=1e-5)


def test_devices_of_different_payload_formats_share_a_cohort():
    """A payload plan gives devices different token counts: stacked steps group them by shape
    and mean what the loop means; shared-model evaluation batches only one shape at a time."""
    tokens = [5, 2, 5, 3, 2]
    loop = _cohort("lae", "tokens", "loop", tokens=tokens)
    stack = _cohort("lae", "tokens", "stacked", tokens=tokens)
    np.testing.assert_allclose(loop.fit(), stack.fit(), atol=1e-4)
    for la, lb in zip(_logits(loop), _logits(stack), strict=True):
        torch.testing.assert_close(la, lb, atol=1e-4, rtol=0)
    same = loop.slots["net"][0]
    for c in (loop, stack):
        c.slots["net"] = [same] * len(SIZES)  # the very same model: the shared-batch path
    np.testing.assert_allclose(loop.evaluate(), stack.evaluate(), atol=1e-5)


def test_a_device_without_batches_in_a_step_does_not_move():
    """Device 3 has one image: after its one step per epoch, later steps must not touch it."""
    c = _cohort("lae", "tokens", "stacked")
    c.optim = Optim(1, 4, 1e-2, 1e-2, "constant")
    alone = _cohort("lae", "tokens", "stacked")
    alone.optim = c.optim
    for field in ("devices", "data", "generators"):
        setattr(alone, field, [getattr(alone, field)[3]])
    alone.slots = {"net": [alone.slots["net"][3]]}
    c.fit()
    alone.fit()
    for k, v in alone.slots["net"][0].items():
        torch.testing.assert_close(c.slots["net"][3][k], v, atol=1e-6, rtol=0)


def test_stacked_adamw_equals_torch_adamw_per_device_on_both_paths(monkeypatch):
    """Uniform steps take torch's fused AdamW, masked ones the hand-written form; any sequence
    of the two equals torch.optim.AdamW run on each device alone, stepping when active."""
    uniform = []
    real = stacked.StackedAdamW._step_uniform
    monkeypatch.setattr(
        stacked.StackedAdamW, "_step_uniform", lambda self: (uniform.append(1), real(self))
    )
    g = torch.Generator().manual_seed(0)
    c, shapes = 3, {"w": (4, 5), "b": (5,)}
    start = {k: torch.randn(c, *s, generator=g) for k, s in shapes.items()}
    params = {k: v.clone() for k, v in start.items()}
    opt = stacked.StackedAdamW(params, torch.full((c,), 0.05), 0.1)
    alone = [{k: v[i].clone().requires_grad_(True) for k, v in start.items()} for i in range(c)]
    refs = [torch.optim.AdamW(list(a.values()), lr=0.05, weight_decay=0.1) for a in alone]
    masks = [[1, 1, 1], [1, 1, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]]
    for mask in masks:
        grads = {k: torch.randn(c, *s, generator=g) for k, s in shapes.items()}
        for k in params:
            params[k].grad = grads[k].clone()
        opt.step(torch.tensor(mask, dtype=torch.bool))
        for i, on in enumerate(mask):
            if on:
                for k, p in alone[i].items():
                    p.grad = grads[k][i].clone()
                refs[i].step()
    assert len(uniform) == 2  # the first two steps; after a masked one, step counts differ
    for i in range(c):
        for k, p in alone[i].items():
            torch.testing.assert_close(params[k][i], p.detach(), atol=1e-6, rtol=1e-6)


def test_devices_holding_one_model_are_evaluated_in_shared_batches(monkeypatch):
    """Devices whose states are the same tensors (FedAvg's received model) run as one batched
    forward, with each device's own loss and accuracy equal to evaluating it alone; devices
    with a model of their own still take the stacked path."""
    c = _cohort("lae", "tokens", "stacked")
    shared = c.slots["net"][0]
    c.slots["net"] = [shared, dict(shared), dict(shared), c.slots["net"][3], dict(shared)]
    with torch.no_grad():
        for v in c.slots["net"][3].values():
            v.add_(0.1)
    alone = []
    for state, d in zip(c.slots["net"], c.data, strict=True):
        c.net.load_state_dict(state)
        alone.append(train.evaluate(c.net, d.x_test, d.y_test))
    stacked_calls = []
    real = stacked.evaluate_stacked
    monkeypatch.setattr(
        stacked,
        "evaluate_stacked",
        lambda net, st, *a: (stacked_calls.append(a), real(net, st, *a))[1],
    )
    np.testing.assert_allclose(c.evaluate(), alone, atol=1e-5)
    assert stacked_calls == []  # four devices in one group, the fifth alone (a chunk of one)


@pytest.mark.parametrize("strategy", STRATEGIES.names())
def test_every_strategy_means_the_same_on_a_cohort(strategy):
    s = get_strategy(strategy)
    runs = {}
    for engine in ("loop", "stacked"):
        keys = s.share if s.share != "none" else "all"
        c = _cohort("lae", "tokens", engine, received_keys=keys, strategy=strategy)
        train = s.local_update(c)
        personal = s.personal_eval(c)
        runs[engine] = (c, train, personal)
    (la, ta, pa), (lb, tb, pb) = runs["loop"], runs["stacked"]
    np.testing.assert_allclose(ta, tb, atol=1e-4)
    # Accuracies within one test image per device (4 test images each).
    assert all(abs(x[1] - y[1]) <= 1 / 4 + 1e-9 for x, y in zip(pa, pb, strict=True))
    for slot in la.slots:
        for sa, sb in zip(la.slots[slot], lb.slots[slot], strict=True):
            assert (sa is None) == (sb is None)
            if sa is None:
                continue
            for k, v in _comparable(sa, CFG.rank).items():
                torch.testing.assert_close(v, _comparable(sb, CFG.rank)[k], atol=1e-3, rtol=0)


def test_sampling_picks_devices_whatever_the_packing():
    a = sample_devices(0, 3, "train", 1000, 50)
    assert a == sample_devices(0, 3, "train", 1000, 50) and len(set(a)) == 50
    assert a != sample_devices(0, 4, "train", 1000, 50)
    assert a != sample_devices(0, 3, "evaluate", 1000, 50)
    assert sample_devices(0, 1, "train", 7, 7) == list(range(7))


def test_pack_balances_work_and_count():
    devices = list(range(10))
    work = [100, 1, 1, 1, 1, 1, 1, 1, 1, 50]
    nodes = pack(devices, work, 3)
    assert sorted(d for n in nodes for d in n) == devices
    assert max(len(n) for n in nodes) <= 4
    assert [0] in [[d for d in n if work[d] >= 50] for n in nodes]  # the two big ones apart
    assert pack([4, 2], [5, 5], 3)[2] == []  # idle node
    assert pack(list(range(6)), [1] * 6, 6) == [[i] for i in range(6)]  # one device per node
    assert num_nodes(100, 0, 2) == 2 and num_nodes(100, 1, 2) == 100 and num_nodes(100, 30, 2) == 4
    assert num_nodes(1, 0, 8) == 1


def test_registry_remembers_newest_state_and_contact():
    r = Registry(5)
    assert r.message_fields([1, 2]) == {
        "devices": [1, 2],
        "last-rounds": [0, 0],
        "first-contact": [1, 1],
    }
    r.update(1, [{"client": 1, "state_saved": 1}, {"client": 2, "error": "x"}])
    r.update(2, [{"client": 1, "state_saved": 1}, {"client": 2, "state_saved": 0}])
    assert r.message_fields([1, 2])["last-rounds"] == [2, 0]
    assert r.message_fields([1, 2])["first-contact"] == [0, 0]
    assert r.superseded == [(1, 1)]


def test_device_store_round_trips_slots_and_skips_empty(tmp_path):
    store = DeviceStore(tmp_path)
    state = {"net": {"head.weight": torch.randn(2, 3)}, "ditto-personal": {"a": torch.ones(2)}}
    assert store.save(123456, 4, state)
    back = store.load(123456, 4)
    assert torch.equal(back["net"]["head.weight"], state["net"]["head.weight"])
    assert torch.equal(back["ditto-personal"]["a"], state["ditto-personal"]["a"])
    assert not store.save(7, 1, {"net": {}})  # FedAvg keeps nothing personal: no file
    assert store.load(7, 0) == {}
    store.drop(123456, 4)
    assert not store.path(123456, 4).exists()


# --- real simulations: one device per node vs one node for all --------------------------------


@pytest.fixture(scope="module")
def module_cwd(tmp_path_factory):
    return tmp_path_factory.mktemp("cohort-cwd")


@pytest.fixture(scope="module", autouse=True)
def one_ray_for_the_module():
    """The module's simulations share one Ray instance (`ray_session`, as a sweep's points do):
    each skips Ray's start-up. Ray starts only when a simulation runs."""
    from miet_fed.federation.ray_setup import ray_session

    with ray_session():
        yield


@pytest.fixture(autouse=True)
def isolated(tmp_path, module_cwd, monkeypatch):
    """conftest's `isolated` (a cache per test), but one working directory for the module (a
    session restarts Ray when it changes): each simulation writes its own `results/<name>`."""
    monkeypatch.setenv("MIET_FED_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(module_cwd)
    yield


def _simulate(capsys, npz: Path, out: str, *sets: str) -> dict:
    from miet_fed.cli import main
    from tests.conftest import TINY

    args = ["simulate", "--dataset", f"npz:{npz}", *TINY, "--out", out, "--quiet", "--json"]
    base = ["data.n_train=80", "data.n_test=20", "fed.num_clients=6", "fed.rounds=2"]
    for s in [*base, "train.epochs=2", *sets]:
        args += ["--set", s]
    assert main(args) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("strategy", "gather", "edge", "dtype"),
    [
        ("fedavg", "sum", "lae", "fp32"),
        ("ditto", "last", "lae", "fp16"),
        ("fedbabu", "all", "layerwise", "bf16"),
        ("fedadam", "cls", "linear", "int8"),
    ],
)
def test_cohort_run_equals_one_device_per_node(strategy, gather, edge, dtype, tmp_path, capsys):
    """Both packings give the same results and ledgers; each gather, payload dtype and edge
    network on the way (the ledger equals the cost model for each)."""
    from miet_fed.comm.cost import feature_bytes_per_image
    from tests.conftest import make_tiny_npz

    npz = make_tiny_npz(tmp_path / "tiny.npz")
    sets = [f"fed.strategy={strategy}", f"model.gather={gather}", f"edge.name={edge}"]
    sets += [f"model.dtype={dtype}", "model.k=3"]
    # 6 nodes of one device against 2 nodes of three: both offer Ray the CPUs the test may use
    # (up to 2), so the module's Ray instance serves both runs (one node of six would start a
    # 1-CPU instance where the test may use two)
    one = _simulate(capsys, npz, f"results/{strategy}-one", *sets, "fed.devices_per_node=1")
    all_ = _simulate(capsys, npz, f"results/{strategy}-all", *sets, "fed.devices_per_node=3")
    for run, s in ((f"{strategy}-one", one), (f"{strategy}-all", all_)):
        assert s["ledger_equals_model"], (s["bytes_by_kind"], s["model_bytes_by_kind"])
        assert s["feature_bytes_per_image"] == feature_bytes_per_image(gather, 5, 192, 3, dtype)
        rounds = pd.read_csv(f"results/{run}/rounds.csv")
        assert rounds.bytes_cum.iloc[-1] == s["total_bytes"]
        assert (rounds[rounds["round"] >= 1].comm_seconds > 0).all()
    assert one["failures"] == all_["failures"] == 0
    la = pd.read_csv(f"results/{strategy}-one/ledger.csv")
    lb = pd.read_csv(f"results/{strategy}-all/ledger.csv")
    pd.testing.assert_frame_equal(la, lb)  # identical bytes, per device, round and kind
    a = pd.read_csv(f"results/{strategy}-one/clients.csv").sort_values(["round", "client"])
    b = pd.read_csv(f"results/{strategy}-all/clients.csv").sort_values(["round", "client"])
    assert a[["round", "client"]].values.tolist() == b[["round", "client"]].values.tolist()
    assert set(a["node"]) == set(range(6)) and set(b["node"]) == {0, 1}  # packed differently
    np.testing.assert_allclose(a["train_loss"], b["train_loss"], atol=1e-3)
    per_image = 1 / a["n_test"]  # final accuracies within one test image per device
    assert ((a["personal_acc"] - b["personal_acc"]).abs() <= per_image + 1e-9).all()
    if one["global_acc"] is not None:
        assert abs(one["global_acc"] - all_["global_acc"]) <= 1 / 20 + 1e-9


@pytest.mark.slow
def test_one_failing_device_in_a_cohort_is_one_failure(tmp_path, capsys, monkeypatch):
    from miet_fed.federation.client_app import FAULT_ENV
    from tests.conftest import make_tiny_npz

    monkeypatch.setenv(FAULT_ENV, "2:1")
    npz = make_tiny_npz(tmp_path / "tiny.npz")
    s = _simulate(capsys, npz, "results/f", "fed.allow_failures=true", "fed.strategy=fedavg")
    assert s["failures"] == 1
    failures = pd.read_csv("results/f/failures.csv")
    assert failures[["round", "client", "phase"]].values.tolist() == [[1, 2, "train"]]
    clients = pd.read_csv("results/f/clients.csv")
    assert len(clients[(clients["round"] == 1) & clients["train_loss"].notna()]) == 5
    assert len(clients[(clients["round"] == 2) & clients["train_loss"].notna()]) == 6


# --- populations larger than the pool -----------------------------------------------------------


def test_population_gives_each_device_its_own_images():
    from miet_fed.errors import MietError
    from miet_fed.federation.population import sample_population

    labels = np.arange(1000) % 10
    pool = np.arange(0, 1000, 2)  # ids of the pool (other ids are e.g. the global test set)
    args = (pool, labels, 20_000, 8, "dirichlet", 0.1, 2, 0.2, 2, 0)
    devices = sample_population(*args)
    again = sample_population(*args)
    assert len(devices) == 20_000
    assert all(np.array_equal(a.train, b.train) for a, b in zip(devices, again, strict=True))
    for d in devices[:500]:
        assert len(d.test) == 1 and len(d.train) >= 2
        assert not set(d.train) & set(d.test)  # own images are distinct
        assert set(d.train) | set(d.test) <= set(pool.tolist())
    # Dirichlet(0.1): most devices hold one or two classes; IID devices hold many.
    skewed = np.mean([len(set(labels[np.concatenate([d.train, d.test])])) for d in devices[:500]])
    iid = sample_population(pool, labels, 500, 8, "iid", 0.1, 2, 0.2, 2, 0)
    spread = np.mean([len(set(labels[np.concatenate([d.train, d.test])])) for d in iid])
    assert skewed < 3 < spread
    with pytest.raises(MietError, match="fed.device_images=2 leaves 1 training"):
        sample_population(pool, labels, 10, 2, "iid", 0.1, 2, 0.2, 2, 0)


@pytest.mark.parametrize("name", EDGE_NETWORKS.names())
def test_every_network_counts_its_own_parameters_for_the_cost_model(name):
    """The ledger is checked against counts taken from the network itself (on the meta
    device): a new network needs no formula elsewhere."""
    from miet_fed.edge.networks import param_counts

    for kind in EDGE_NETWORKS.get(name).accepts:
        net = _net(name, kind)
        counts = param_counts(name, kind, SHAPES[kind], 3, CFG)
        assert counts["head"] == sum(p.numel() for p in net.head_parameters())
        assert counts["total"] == sum(p.numel() for p in net.parameters())


@pytest.mark.slow
def test_a_round_that_cannot_count_is_not_checkpointed(tmp_path, capsys, monkeypatch):
    """Every device fails in round 2: the run goes on (failures allowed), but round 2 is not
    committed, so a resume would redo it rather than build on it."""
    from miet_fed.federation.client_app import FAULT_ENV
    from tests.conftest import make_tiny_npz

    monkeypatch.setenv(FAULT_ENV, ",".join(f"{d}:2" for d in range(6)))
    npz = make_tiny_npz(tmp_path / "tiny.npz")
    from miet_fed.cli import main
    from tests.conftest import TINY

    args = ["simulate", "--dataset", f"npz:{npz}", *TINY, "--out", "results/n", "--quiet"]
    for s in ["data.n_train=80", "data.n_test=20", "fed.num_clients=6", "fed.rounds=3"]:
        args += ["--set", s]
    assert main([*args, "--set", "fed.allow_failures=true"]) == 0
    err = capsys.readouterr().err
    assert "round 2 is not checkpointed" in err and "Traceback" not in err
    rounds = pd.read_csv("results/n/rounds.csv")
    assert rounds[rounds["round"] >= 1].failures.tolist() == [0, 6, 0]


def test_metric_row_sizes_equal_flowers_serializer():
    """Each device's row carries the size of the MetricRecord it would send alone, computed per
    item (fast); it must equal Flower's own serializer, the size field's own varint included."""
    import random

    from flwr.app import MetricRecord
    from flwr.common.serde import metric_record_to_proto

    from miet_fed.federation.metric_bytes import metric_record_bytes, with_own_size

    rng = random.Random(0)
    choices = [0, 0.0, -1, 127, 128, 2**40, -(2**40), 1.5e300, float("nan")]
    for _ in range(500):
        n = rng.randint(0, 12)
        values = {f"key_{i}" * rng.randint(1, 3): rng.choice(choices) for i in range(n)}
        size = metric_record_to_proto(MetricRecord(values)).ByteSize()
        assert metric_record_bytes(values) == size
        row = with_own_size(values)
        assert row["metrics_up_bytes"] == metric_record_to_proto(MetricRecord(row)).ByteSize()


class _Disk:
    """A stand-in for the on-disk cache: payload of image i is i in every entry."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def cached(self, ids, fmt=""):  # noqa: ANN001, ANN201
        self.calls.append(len(ids))
        x = torch.as_tensor(np.asarray(ids), dtype=torch.float32)
        return {"z": x[:, None, None].expand(-1, 3, 2).clone(), "cls": x[:, None].clone()}


def test_node_payload_table_keeps_order_warms_once_and_evicts(monkeypatch):
    from miet_fed.federation import actor

    disk = _Disk()
    source = actor.FeatureSource(None, disk)
    ids = np.array([7, 3, 7, 11])
    out = source.kept(ids, warm=np.arange(20))
    assert out["z"][:, 0, 0].tolist() == [7, 3, 7, 11] and out["cls"].shape == (4, 1)
    assert source.fetched == 20 and disk.calls == [3, 17]  # the cohort first, then the run
    again = source.kept(np.array([19, 0, 5]), warm=np.arange(20))
    assert again["z"][:, 1, 1].tolist() == [19, 0, 5] and disk.calls == [3, 17]  # no refetch
    assert source.kept(np.array([25, 3]))["cls"][:, 0].tolist() == [25, 3]
    assert disk.calls == [3, 17, 1]

    monkeypatch.setattr(actor, "NODE_CACHE_MB", 0)  # nothing fits: no warm-up, start over
    small = actor.FeatureSource(None, disk)
    assert small.kept(np.array([1, 2]), warm=np.arange(50))["cls"][:, 0].tolist() == [1, 2]
    assert small.fetched == 2
    assert small.kept(np.array([4]))["cls"][:, 0].tolist() == [4] and small._used == 1


def test_node_payload_parts_are_views_of_a_table_laid_out_in_run_order():
    from miet_fed.federation import actor

    disk = _Disk()
    source = actor.FeatureSource(None, disk)
    parts = [np.array([5, 2]), np.array([9]), np.array([], dtype=np.int64), np.array([2, 7])]
    out = source.kept_parts(parts, warm=np.array([5, 2, 9, 7, 1]))  # the run, device by device
    assert [o["cls"][:, 0].tolist() for o in out] == [[5.0, 2.0], [9.0], [], [2.0, 7.0]]
    assert out[2]["z"].shape == (0, 3, 2) and disk.calls == [4, 1]
    table = source._table["z"].untyped_storage().data_ptr()
    assert out[0]["z"].untyped_storage().data_ptr() == table  # contiguous rows: a view
    assert out[3]["z"].untyped_storage().data_ptr() != table  # rows 1 and 3: gathered
    cold = actor.FeatureSource(None, _Disk())
    assert cold.kept_parts([np.array([], dtype=np.int64)])[0]["z"].shape == (0, 3, 2)


def test_local_ray_offers_one_worker_per_node_and_no_more():
    from miet_fed.federation.ray_setup import local_cpus

    assert local_cpus(1, 1.0, have=16) == 1  # one device: one worker process, not 16
    assert local_cpus(4, 0.5, have=16) == 2 and local_cpus(3, 0.5, have=16) == 2
    assert local_cpus(100, 1.0, have=16) == 16  # at most the machine's
    assert local_cpus(None, 1.0, have=16) == 16  # unknown (flwr run): the machine's
