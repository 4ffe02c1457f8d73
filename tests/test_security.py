"""Nobody let in: a simulation's Ray instance listens on loopback only and refuses to be joined
without its token. Real processes, real sockets; nothing mocked."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TINY, brightness_npz

pytestmark = pytest.mark.slow

MIET_FED = str(Path(sys.executable).with_name("miet-fed"))


def _listeners(pid: int) -> set[tuple[str, int, str]]:
    """(ip, port, process name) of every listening TCP socket of `pid` and its descendants."""
    import importlib

    import ray  # noqa: F401  - puts Ray's bundled psutil on the path

    psutil = importlib.import_module("psutil")

    try:
        root = psutil.Process(pid)
        tree = {p.pid: p for p in [root, *root.children(recursive=True)]}
    except psutil.NoSuchProcess:
        return set()
    found = set()
    for conn in psutil.net_connections(kind="inet"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in tree:
            try:
                name = tree[conn.pid].name()
            except psutil.NoSuchProcess:
                name = "?"
            found.add((conn.laddr.ip, conn.laddr.port, name))
    return found


def _is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(addr, "ipv4_mapped", None)
    return (mapped or addr).is_loopback


def test_simulation_listens_on_loopback_only(tmp_path):
    """Every listening socket of a running `miet-fed simulate` (driver, GCS, raylet, workers,
    agents, the backbone actor) is on 127.0.0.1 / ::1, sampled the whole run long."""
    npz = brightness_npz(tmp_path / "d.npz", 120, seed=1)
    cmd = [
        MIET_FED,
        "simulate",
        "--dataset",
        f"npz:{npz}",
        *TINY,
        "--quiet",
        "--out",
        str(tmp_path / "run"),
        *("--set", "data.n_train=80", "--set", "data.n_test=20", "--set", "fed.num_clients=2"),
        *("--set", "fed.rounds=2", "--set", "fed.partition=iid"),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    seen: set[tuple[str, int, str]] = set()
    names: set[str] = set()
    try:
        while proc.poll() is None:
            now = _listeners(proc.pid)
            seen |= now
            names |= {n for _, _, n in now}
            time.sleep(0.3)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert "gcs_server" in names and "raylet" in names, seen  # we did watch a live cluster
    exposed = sorted(s for s in seen if not _is_loopback(s[0]))
    assert not exposed, f"listening beyond loopback: {exposed}"


HELPER = """
import sys, os
from miet_fed.config import SimulateConfig
from miet_fed.federation.ray_setup import _init_ray
import ray
_init_ray(SimulateConfig())
print(ray.get_runtime_context().gcs_address, os.environ["RAY_AUTH_TOKEN"], flush=True)
sys.stdin.read()
"""

JOIN = """
import sys, ray
ray.init(address=sys.argv[1], log_to_driver=False)
print("JOINED", ray.get(ray.remote(lambda: 41 + 1).remote()), flush=True)
"""


def test_local_cluster_refuses_a_process_without_its_token(tmp_path):
    """Another process of the same machine cannot join without the run's token; with it, it
    can (so the refusal is the authentication, not a broken address)."""
    helper = subprocess.Popen(
        [sys.executable, "-c", HELPER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")},
    )
    try:
        gcs, token = helper.stdout.readline().split()
        assert gcs.startswith("127.0.0.1:"), gcs
        base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
        base["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # give the intruder every chance
        # A refused connection is retried once a second, 20 times by default: 3 tries say the
        # same (the run's-token control below joins on its first) and free the core 17 s sooner
        base["RAY_NUM_REDIS_GET_RETRIES"] = "3"
        attempts = {
            "no token": base,
            "wrong token": {**base, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "x" * 43},
            "the run's token": {**base, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token},
        }
        procs = {
            name: subprocess.Popen(
                [sys.executable, "-c", JOIN, gcs],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env=env,
            )
            for name, env in attempts.items()
        }
        joined = {}
        for name, p in procs.items():
            try:
                out, _ = p.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()
                out = ""
            joined[name] = "JOINED 42" in out
        assert joined == {"no token": False, "wrong token": False, "the run's token": True}
    finally:
        helper.stdin.close()
        helper.wait(timeout=60)
