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
`tests/test_flower_compat.py` drives Flower's real strategy objects through both and checks
the backend still makes the call it hides.
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
