"""Everything that relies on how Flower's strategies work inside, in one place.

- Flower strategies sample nodes themselves (with the global `random` module). Ours sample
  devices, so a strategy is shown a `NodesView` of the grid holding only the nodes that get
  devices this round (fraction 1: it "samples" all of them), builds its messages (and keeps its
  own round state, such as FedAdam's `current_arrays`), and `per_node` then gives each node its
  own config naming its devices.
- Server-side optimiser state lives in strategy attributes (`m_t`, `v_t`, `momentum_vector`,
  `current_arrays`); each strategy file declares the names it needs, and reading one that Flower
  no longer has is an error here, not a silently incomplete checkpoint.
- Flower's Ray backend shuts Ray down after every simulation; `ray_left_running` hides that
  call from it while a `ray_session` keeps one Ray instance for many runs.
- Flower's simulation moves messages by polling every 0.1 s, twice per phase (its engine looks
  for new messages, the grid for replies): with a few cohort nodes that was 0.3 s of a 3 s
  round spent asleep, and its worker threads took a second to notice the run had ended.
  `quick_polling` and `quick_pulls` poll faster where there are few nodes.
`tests/test_flower_compat.py` drives Flower's real strategy objects through these and checks
the code they rely on still does what they assume.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid


class NodesView:
    """A Grid that shows only `node_ids`; everything else is the real grid."""

    def __init__(self, grid: Grid, node_ids: list[int]) -> None:
        self._grid = grid
        self._nodes = list(node_ids)

    def get_node_ids(self) -> list[int]:
        return list(self._nodes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


def per_node(
    messages: Iterable[Message], plan: dict[int, dict[str, Any]], config_key: str, where: str
) -> list[Message]:
    """Flower built one message per node of `plan` (through a `NodesView`) sharing one config;
    give each node its own config: the shared one plus its `plan` fields (its devices)."""
    out = []
    for msg in messages:
        node = msg.metadata.dst_node_id
        content = msg.content
        node_config = ConfigRecord({**dict(content[config_key]), **plan[node]})
        records = {k: v for k, v in content.items() if k != config_key}
        out.append(
            Message(
                RecordDict({**records, config_key: node_config}),
                dst_node_id=node,
                message_type=msg.metadata.message_type,
            )
        )
    if sorted(m.metadata.dst_node_id for m in out) != sorted(plan):
        raise RuntimeError(
            f"Flower's {where} did not address every node it was shown: the strategy API "
            "changed (see miet_fed/federation/flower_compat.py)"
        )
    return out


def strategy_state(strategy: Any, names: Iterable[str]) -> dict[str, Any]:
    """The declared round-to-round state of a Flower strategy (None values left out)."""
    state = {}
    for name in names:
        if not hasattr(strategy, name):
            raise RuntimeError(
                f"Flower's {type(strategy).__name__} has no attribute '{name}' any more: its "
                "server state cannot be checkpointed (see miet_fed/federation/flower_compat.py)"
            )
        value = getattr(strategy, name)
        if value is not None:
            state[name] = value
    return state


def restore_state(strategy: Any, state: dict[str, Any]) -> None:
    for name, value in state.items():
        if not hasattr(strategy, name):
            raise RuntimeError(f"Flower's {type(strategy).__name__} has no attribute '{name}'")
        setattr(strategy, name, value)


class _RayWithoutShutdown:
    """The `ray` module as Flower's Ray backend sees it inside `ray_left_running`."""

    def __init__(self, ray: Any) -> None:
        self._ray = ray

    def shutdown(self, *args: Any, **kwargs: Any) -> None:
        """Left to the session (`miet_fed.federation.ray_setup.ray_session`)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ray, name)


@contextmanager
def ray_left_running() -> Iterator[None]:
    """Flower's `RayBackend.terminate` ends every simulation with `ray.shutdown()`; within this
    block that call does nothing, so the next run of a session reuses the instance. Fails
    loudly if the backend no longer makes that call through its module's `ray`."""
    from flwr.server.superlink.fleet.vce.backend import raybackend

    if "ray.shutdown()" not in inspect.getsource(raybackend.RayBackend.terminate):
        raise RuntimeError(
            "Flower's RayBackend.terminate no longer calls ray.shutdown(): update "
            "miet_fed/federation/flower_compat.py (ray_left_running)"
        )
    real = raybackend.ray
    raybackend.ray = _RayWithoutShutdown(real)
    try:
        yield
    finally:
        raybackend.ray = real


FLOWER_POLL = 0.1  # Flower's own interval: its engine's `f_stop.wait(0.1)`, the grid's default
MIN_POLL = 0.02  # the driver's own CPU while the nodes train: 3.7 % of a core at 20 ms, 10 at 5 ms
POLL_PER_NODE = 0.001  # a poll asks the link state once per node: keep polls per second bounded
#: the engine's worker threads wake on a new message at once; this only bounds how long they take
#: to notice the end of the run (Flower's 1 s)
QUEUE_WAIT = 0.05


def poll_interval(num_nodes: int) -> float:
    """Seconds between polls for `num_nodes` nodes: 20 ms for up to 20 cohort nodes, Flower's
    0.1 s from 100 nodes on (one node per device), where each poll's own cost grows with the
    nodes.

    Measured on the 2-core machine: the default job (2 nodes), the driver's CPU during rounds
    1.5 % of a core with Flower's polling, 3.7 % at 20 ms, 10 % at 5 ms; tiny ViT, one device
    per node, 20 nodes: 0.52 and 0.51 s per round at 10 ms against 0.74 and 0.85 s at 0.1 s
    (Dirichlet), 0.47 and 0.45 s at 20 ms against 0.64 and 0.64 s (IID, 8 rounds); 100 nodes:
    no difference in round time at 50 ms, the driver about 5 % busier.
    """
    return min(FLOWER_POLL, max(MIN_POLL, num_nodes * POLL_PER_NODE))


class _QuickStop:
    """The stop event Flower's message extractor waits on, its waits shortened to `interval`."""

    def __init__(self, event: Any, interval: float) -> None:
        self._event, self._interval = event, interval

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(self._interval if timeout is None else min(timeout, self._interval))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._event, name)


@contextmanager
def quick_polling(num_nodes: int) -> Iterator[None]:
    """Within this block the simulation engine looks for new messages every
    `poll_interval(num_nodes)` instead of 0.1 s, and its worker threads wait at most
    `QUEUE_WAIT` on their queues before looking at the stop event again (Flower's
    `get(timeout=1.0)`: the engine took a second to stop after the last round). Fails loudly
    if Flower's extractor no longer waits on its stop event (`f_stop.wait(0.1)` in
    `vce_api.add_messages_to_queue`) or `run_api` no longer makes its queues with `Queue`."""
    from flwr.server.superlink.fleet.vce import vce_api

    real = vce_api.add_messages_to_queue
    signature = inspect.signature(real)
    if "f_stop" not in signature.parameters or "f_stop.wait(" not in inspect.getsource(real):
        raise RuntimeError(
            "Flower's vce_api.add_messages_to_queue no longer waits on f_stop: update "
            "miet_fed/federation/flower_compat.py (quick_polling)"
        )
    real_queue = vce_api.Queue
    if "= Queue()" not in inspect.getsource(vce_api.run_api):
        raise RuntimeError(
            "Flower's vce_api.run_api no longer makes its queues with Queue(): update "
            "miet_fed/federation/flower_compat.py (quick_polling)"
        )
    interval = poll_interval(num_nodes)

    def polled(*args: Any, **kwargs: Any) -> None:
        bound = signature.bind(*args, **kwargs)
        bound.arguments["f_stop"] = _QuickStop(bound.arguments["f_stop"], interval)
        real(*bound.args, **bound.kwargs)

    class QuickQueue(real_queue):  # type: ignore[valid-type,misc]
        def get(self, block: bool = True, timeout: float | None = None) -> Any:
            return super().get(block, timeout if timeout is None else min(timeout, QUEUE_WAIT))

    vce_api.add_messages_to_queue, vce_api.Queue = polled, QuickQueue
    try:
        yield
    finally:
        vce_api.add_messages_to_queue, vce_api.Queue = real, real_queue


def quick_pulls(grid: Grid, num_nodes: int) -> None:
    """The simulation's in-memory grid pulls replies every `poll_interval(num_nodes)` instead
    of 0.1 s; other grids (a deployment's) are left as they are. Fails loudly if the in-memory
    grid no longer sleeps `pull_interval` between pulls."""
    from flwr.superlink.grid.inmemory_grid import InMemoryGrid

    if not isinstance(grid, InMemoryGrid):
        return
    if "time.sleep(self.pull_interval)" not in inspect.getsource(InMemoryGrid.send_and_receive):
        raise RuntimeError(
            "Flower's InMemoryGrid no longer sleeps pull_interval between pulls: update "
            "miet_fed/federation/flower_compat.py (quick_pulls)"
        )
    grid.pull_interval = poll_interval(num_nodes)
