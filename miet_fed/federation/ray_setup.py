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


def local_cpus(nodes: int | None, cpus_per_client: float, have: int) -> int:
    """CPUs a local Ray instance offers: enough for one worker per cohort node and no more
    (Flower starts a worker process per `cpus_per_client` the cluster has, whatever the run
    needs), at most the machine's."""
    if not nodes:
        return have
    return max(1, min(have, math.ceil(nodes * cpus_per_client - 1e-9)))


def _init_ray(cfg: Any, nodes: int | None = None) -> None:
    """Start a private local Ray instance, or join the user's cluster (`run.ray_address`).
    `nodes`: the run's cohort nodes, which bounds a local instance's worker processes."""
    import ray

    from miet_fed.federation.spec import NAMESPACE

    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # silences a FutureWarning
    if ray.is_initialized():
        return
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
    need, have = cfg.fed.cpus_per_client, os.cpu_count() or 1
    if need > have:  # Flower would stop with "ActorPool is empty" and a traceback
        raise MietError(
            f"fed.cpus_per_client={need:g} but this machine has {have} CPU(s); use "
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
