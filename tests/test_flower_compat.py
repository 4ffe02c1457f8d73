"""What we rely on inside Flower's strategies, driven through their real objects: a Flower
upgrade that changes it fails here, not in the middle of a long run."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)

from miet_fed.config import FedConfig
from miet_fed.federation.flower_compat import NodesView, per_node, restore_state, strategy_state
from miet_fed.federation.strategies import STRATEGIES, get_strategy


@pytest.fixture(autouse=True)
def _run_context(flower_run):
    """Every test here builds Messages (conftest's `flower_run`)."""


class _Grid:
    """Only what Flower's sampling reads: the node ids."""

    def get_node_ids(self) -> list[int]:
        return [11, 22, 33, 44]


def _flower(name: str):
    s = get_strategy(name)
    return s.flower_cls(
        fraction_train=1.0,
        fraction_evaluate=1.0,
        min_train_nodes=1,
        min_evaluate_nodes=1,
        min_available_nodes=1,
        **s.flower_kwargs(FedConfig(strategy=name)),
    )


def _arrays(value: float) -> ArrayRecord:
    return ArrayRecord({"w": Array(np.full(3, value, np.float32))})


def _reply(node: int, value: float, weight: int) -> Message:
    content = RecordDict(
        {"arrays": _arrays(value), "metrics": MetricRecord({"num-examples": weight})}
    )
    return Message(content, dst_node_id=node, message_type=MessageType.TRAIN)


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_strategy_addresses_only_the_nodes_it_is_shown(name):
    flower = _flower(name)
    plan = {22: {"devices": [3, 5]}, 44: {"devices": [9]}}
    view = NodesView(_Grid(), sorted(plan))
    for phase in ("train", "evaluate"):
        configure = getattr(flower, f"configure_{phase}")
        messages = per_node(
            configure(1, _arrays(0.0), ConfigRecord({"spec": "s"}), view),
            plan,
            flower.configrecord_key,
            phase,
        )
        got = {m.metadata.dst_node_id: m.content[flower.configrecord_key] for m in messages}
        assert sorted(got) == [22, 44]
        assert list(got[22]["devices"]) == [3, 5] and list(got[44]["devices"]) == [9]
        assert got[22]["spec"] == "s" and got[22]["server-round"] == 1
        assert all("arrays" in m.content for m in messages)


def test_per_node_fails_loudly_when_a_node_is_left_out():
    flower = _flower("fedavg")
    messages = flower.configure_train(1, _arrays(0.0), ConfigRecord({}), NodesView(_Grid(), [22]))
    with pytest.raises(RuntimeError, match="API"):
        per_node(messages, {22: {}, 44: {}}, flower.configrecord_key, "configure_train")


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_declared_server_state_exists_and_round_trips(name):
    """Each strategy's declared round-to-round state is real Flower state after a round."""
    flower = _flower(name)
    flower.configure_train(1, _arrays(0.0), ConfigRecord({}), NodesView(_Grid(), [11, 22]))
    arrays, _ = flower.aggregate_train(1, [_reply(11, 1.0, 1), _reply(22, 4.0, 3)])
    names = get_strategy(name).server_state
    state = strategy_state(flower, names)
    if get_strategy(name).flower_cls.__name__ == "FedAvg":
        # weighted mean of cohort means == mean over devices: (1*1 + 3*4) / 4
        np.testing.assert_allclose(arrays["w"].numpy(), np.full(3, 3.25))
    assert set(state) == set(names)  # every declared attribute holds state after a round
    fresh = _flower(name)
    restore_state(fresh, state)
    assert all(getattr(fresh, k) is state[k] for k in state)


def test_a_renamed_attribute_is_an_error():
    with pytest.raises(RuntimeError, match="no attribute 'm_t_renamed'"):
        strategy_state(_flower("fedadam"), ["m_t_renamed"])


def test_ray_left_running_hides_only_the_shutdown_of_flowers_ray_backend():
    """Flower's RayBackend.terminate still calls ray.shutdown() through its module's `ray`;
    inside the block that call does nothing and everything else is the real module."""
    import ray
    from flwr.server.superlink.fleet.vce.backend import raybackend

    from miet_fed.federation.flower_compat import ray_left_running

    assert raybackend.ray is ray
    with ray_left_running():
        assert raybackend.ray is not ray
        assert raybackend.ray.shutdown() is None
        assert raybackend.ray.is_initialized is ray.is_initialized
        assert raybackend.ray.init is ray.init
    assert raybackend.ray is ray


def test_poll_interval_is_short_for_cohort_nodes_and_flowers_own_for_many():
    from miet_fed.federation.flower_compat import FLOWER_POLL, MIN_POLL, poll_interval

    assert poll_interval(1) == poll_interval(2) == MIN_POLL
    assert poll_interval(200) == poll_interval(100_000) == FLOWER_POLL
    values = [poll_interval(n) for n in range(1, 400)]
    assert values == sorted(values)


def test_quick_polling_runs_flowers_extractor_with_short_waits_and_restores_it():
    """Flower's own `add_messages_to_queue` runs inside the block (polling a link state that
    records each poll), waking every 20 ms instead of every 0.1 s; the block restores it."""
    import queue
    import threading
    import time

    from flwr.server.superlink.fleet.vce import vce_api

    from miet_fed.federation.flower_compat import quick_polling

    class Polls:  # stands in for the link state: the extractor only asks it for messages
        def __init__(self) -> None:
            self.count = 0

        def get_message_ins(self, node_id: int, limit: int) -> list:
            self.count += 1
            return []

    real, real_queue = vce_api.add_messages_to_queue, vce_api.Queue
    polls, stop = Polls(), threading.Event()
    with quick_polling(2):
        assert vce_api.add_messages_to_queue is not real
        # the engine's worker threads wait 1 s on an empty queue before looking at the stop
        # event: here at most the poll interval
        t0 = time.perf_counter()
        with pytest.raises(queue.Empty):
            vce_api.Queue().get(timeout=1.0)
        assert time.perf_counter() - t0 < 0.5
        extractor = threading.Thread(
            target=vce_api.add_messages_to_queue, args=(polls, queue.Queue(), {7: 0}, stop)
        )
        extractor.start()
        time.sleep(0.4)
        stop.set()
        extractor.join(timeout=5)
    assert not extractor.is_alive()
    assert vce_api.add_messages_to_queue is real and vce_api.Queue is real_queue
    assert polls.count > 8  # about 20 at 20 ms; Flower's 0.1 s would give 4 or 5


def test_quick_pulls_sets_the_in_memory_grids_interval_and_leaves_other_grids_alone():
    from flwr.superlink.grid.inmemory_grid import InMemoryGrid

    from miet_fed.federation.flower_compat import poll_interval, quick_pulls

    grid = InMemoryGrid.__new__(InMemoryGrid)  # its constructor needs a live link state
    grid.pull_interval = 0.1
    quick_pulls(grid, 2)
    assert grid.pull_interval == poll_interval(2) < 0.1

    class OtherGrid:
        pull_interval = 3.0

    other = OtherGrid()
    quick_pulls(other, 2)  # type: ignore[arg-type]
    assert other.pull_interval == 3.0
