"""Starting or joining Ray for a simulation, safely.

A local run must not open a cluster to the network: `ray.init(_node_ip_address="127.0.0.1")`
alone is not enough, because Ray rewrites a loopback node address to the machine's routable one
and its gRPC servers then listen on every interface, unauthenticated. So a local run

* tells Ray this machine is not part of a cluster (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, the
  switch Ray uses on laptops): the node address stays 127.0.0.1 and every server binds to it;
* turns on Ray's token authentication (`RAY_AUTH_MODE=token`) with a fresh random token held
  only in the environment of this process and the Ray processes it starts (or the user's own
  `RAY_AUTH_TOKEN`), so another local user cannot join the cluster and run code as ours.

A cluster given with `--ray-address` is the user's own: it is joined as it is (its security is
theirs to set up; see the README), with only a fast reachability check first.

`ray_session()` keeps one Ray instance, and the backbone actor, for every simulation run inside
it (a sweep's points): each run then skips `ray.init` and the actor's start-up, a few seconds
that dominate short runs. A run whose Ray settings differ from the session's (CPUs, plugins,
the environment and working directory the workers inherit) starts a fresh instance.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from miet_fed.cpus import usable_cpus
from miet_fed.errors import MietError

#: Ray's own switch for "not a multi-node machine": keep the node address on loopback.
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
AUTH_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")


def _check_reachable(address: str) -> None:
    """Ray retries an unreachable GCS for minutes; a host:port that refuses is an error now."""
    host, _, port = address.rpartition(":")
    if address == "auto" or not port.isdigit():
        return
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=3):
            pass
    except OSError as exc:
        raise MietError(
            f"cannot connect to the Ray cluster at '{address}' ({exc.strerror or exc}); "
            "start one with `ray start --head` or leave run.ray_address empty"
        ) from None


@contextmanager
def _keep_sigterm_handler() -> Iterator[None]:
    """ray.init replaces the SIGTERM handler (natively: abort with a stack dump; in Python:
    sys.exit, which leaves Flower's server thread waiting) and may touch SIGINT's; put the
    previous ones back, so the CLI's handler turns either into a clean stop that shuts Ray down
    and keeps the checkpoint."""
    main = threading.current_thread() is threading.main_thread()
    signals = (signal.SIGINT, signal.SIGTERM)
    before = {s: signal.getsignal(s) for s in signals} if main else {}
    try:
        yield
    finally:
        for sig, handler in before.items():
            if handler is not None:
                signal.signal(sig, handler)


def local_ray_env() -> dict[str, str]:
    """Environment of a local, loopback-only, token-authenticated Ray instance. The token is
    the user's `RAY_AUTH_TOKEN` if set (so they can attach a debugger), else a fresh one."""
    return {
        LOCAL_ONLY_ENV: "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": os.environ.get("RAY_AUTH_TOKEN") or secrets.token_urlsafe(32),
    }


@contextmanager
def _local_only() -> Iterator[None]:
    """Ray reads its cluster switch once, at import: set it for this process as well as for
    the processes ray.init starts, and put it back afterwards (a later `--ray-address` run in
    the same process, e.g. in a sweep, must see the machine's real address again)."""
    import ray._private.ray_constants as ray_constants

    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def _reload_auth_settings() -> bool:
    """Ray reads RAY_AUTH_MODE and the token once per process, at their first use (importing
    Flower can be enough): make it read them again now. True when token auth is on."""
    from ray._raylet import AuthenticationMode, AuthenticationTokenLoader, Config
    from ray._raylet import get_authentication_mode as mode

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
    return mode() == AuthenticationMode.TOKEN


_SET_HERE: dict[str, str | None] = {}  # variables a local run set, with their earlier values

#: While a `ray_session()` is open: {"key": the Ray instance's settings, "actors": name -> handle}.
_SESSION: dict[str, Any] | None = None
#: Environment variables Ray's processes inherit at start that change what runs in them (fault
#: injection, threads, profiling): a session restarts Ray when one changes. MIET_FED_CACHE is
#: not among them (the cache root reaches the actor and the nodes through the run's spec).
_INHERITED = ("MIET_FED_", "OMP_", "MKL_", "CUDA_", "PYTHONPATH")
_NOT_INHERITED = ("MIET_FED_CACHE",)


@contextmanager
def ray_session() -> Iterator[None]:
    """Simulations inside share one Ray instance and their backbone actors (see the module
    docstring); Ray is shut down when the block ends. Nested sessions are one session."""
    global _SESSION
    if _SESSION is not None:
        yield
        return
    _SESSION = {"key": None, "actors": {}}
    try:
        yield
    finally:
        _SESSION = None
        import ray

        if ray.is_initialized():
            ray.shutdown()


def in_session() -> bool:
    return _SESSION is not None


def session_actor(name: str, start: Any) -> tuple[Any, bool]:
    """(the backbone actor called `name`, whether it was reused). In a session an actor of this
    run's settings is kept for the next run; actors of other settings are killed first (they
    hold a model and features in memory). Outside a session: `start()`."""
    if _SESSION is None:
        return start(), False
    import ray

    actors = _SESSION["actors"]
    for other in [n for n in actors if n != name]:
        ray.kill(actors.pop(other))
    if name in actors:
        return actors[name], True
    actors[name] = start()
    return actors[name], False


def end_of_run(ok: bool) -> None:
    """After a run: shut Ray down, unless a session keeps it (a failed run shuts it down even
    then: its actors may be dead or half-way through a call)."""
    import ray

    if _SESSION is not None and ok:
        return
    if _SESSION is not None:
        _SESSION.update(key=None, actors={})
    if ray.is_initialized():
        ray.shutdown()


def _session_key(cfg: Any, cpus: int) -> tuple:
    env = sorted(
        (k, v)
        for k, v in os.environ.items()
        if k.startswith(_INHERITED) and k not in _NOT_INHERITED
    )
    # The working directory too: Ray's processes keep the one they started in, and a run's
    # relative paths (its staging folder, an npz dataset) are resolved there.
    return (cfg.run.ray_address, cpus, tuple(cfg.run.plugins), tuple(env), os.getcwd())


def local_cpus(nodes: int | None, cpus_per_client: float, have: int) -> int:
    """CPUs a local Ray instance offers: enough for one worker per cohort node and no more
    (Flower starts a worker process per `cpus_per_client` the cluster has, whatever the run
    needs), at most those this process may use (`usable_cpus`)."""
    if not nodes:
        return have
    return max(1, min(have, math.ceil(nodes * cpus_per_client - 1e-9)))


def _init_ray(cfg: Any, nodes: int | None = None) -> None:
    """Start a private local Ray instance, or join the user's cluster (`run.ray_address`).
    `nodes`: the run's cohort nodes, which bounds a local instance's worker processes."""
    import ray

    from miet_fed.federation.spec import NAMESPACE

    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # silences a FutureWarning
    have = usable_cpus()
    key = _session_key(cfg, local_cpus(nodes, cfg.fed.cpus_per_client, have))
    if ray.is_initialized():
        if _SESSION is None or _SESSION["key"] == key:
            return  # the session's instance (or one the caller started: theirs to manage)
        ray.shutdown()  # the session's instance has other settings
        _SESSION.update(key=None, actors={})
    if _SESSION is not None:
        _SESSION["key"] = key
    common = {
        "namespace": NAMESPACE,
        "configure_logging": True,
        "logging_level": logging.WARNING,
        "log_to_driver": cfg.run.progress,
    }
    if cfg.run.ray_address:
        for name, value in _SET_HERE.items():  # the user's cluster gets the user's settings
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _SET_HERE.clear()
        _reload_auth_settings()
        _check_reachable(cfg.run.ray_address)
        try:
            with _keep_sigterm_handler():
                ray.init(address=cfg.run.ray_address, **common)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise MietError(
                f"cannot connect to the Ray cluster at '{cfg.run.ray_address}' "
                f"({str(exc).splitlines()[0][:120]}); start one with `ray start --head` "
                "or leave run.ray_address empty (if the cluster uses token authentication, "
                "set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN)"
            ) from None
        return
    need = cfg.fed.cpus_per_client
    if need > have:  # Flower would stop with "ActorPool is empty" and a traceback
        raise MietError(
            f"fed.cpus_per_client={need:g} but this process may use {have} CPU(s); use "
            f"fed.cpus_per_client <= {have}, or a Ray cluster (--ray-address) with bigger nodes"
        )
    for name, value in local_ray_env().items():
        _SET_HERE.setdefault(name, os.environ.get(name))
        os.environ[name] = value
    if not _reload_auth_settings():
        raise MietError(
            "could not turn on Ray's token authentication for the local cluster (this Ray "
            f"version: {ray.__version__}); install the pinned ray==2.55.1"
        )
    with _keep_sigterm_handler(), _local_only():
        ray.init(
            num_cpus=local_cpus(nodes, cfg.fed.cpus_per_client, have),
            include_dashboard=False,
            _node_ip_address="127.0.0.1",  # nothing listens beyond this machine
            **common,
        )
