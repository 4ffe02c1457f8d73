"""Scale-out: simulations on an existing Ray cluster reuse one detached backbone actor."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from miet_fed.cli import main
from tests.conftest import TINY, brightness_npz

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head(tmp_path):
    """A local head node standing in for a user's cluster; stopped whatever happens."""
    ray_bin = str(Path(sys.executable).with_name("ray"))
    port = _free_port()
    temp = Path("/tmp") / f"miet-ray-{port}"  # short: Ray's socket paths must stay < 108 chars
    subprocess.run(
        [
            ray_bin,
            "start",
            "--head",
            f"--port={port}",
            "--num-cpus=2",
            "--num-gpus=0",
            "--include-dashboard=false",
            "--node-ip-address=127.0.0.1",
            "--disable-usage-stats",
            f"--temp-dir={temp}",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        _stop_cluster(temp)


def _stop_cluster(temp: Path) -> None:
    """Kill this head's processes only (`ray stop` would kill every Ray on the machine)."""
    import os
    import signal
    import time

    def ours() -> list[int]:
        pids = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(temp) in cmd:
                pids.append(int(proc.name))
        return pids

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in ours():
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        time.sleep(2)


def test_two_simulations_share_one_backbone(ray_head, tmp_path, capsys):
    brightness_npz(tmp_path / "c.npz", 90, seed=2)
    args = [
        "simulate",
        "--dataset",
        f"npz:{tmp_path / 'c.npz'}",
        *TINY,
        "--set",
        "data.n_train=60",
        "--set",
        "data.n_test=20",
        "--set",
        "fed.num_clients=3",
        "--set",
        "fed.rounds=1",
        "--set",
        "fed.partition=iid",
        "--ray-address",
        ray_head,
        "--quiet",
        "--json",
    ]
    # Each run in its own process, as a user would run them (and free of whatever Ray state
    # earlier in-process tests left behind).
    exe = str(Path(sys.executable).with_name("miet-fed"))
    summaries = []
    for out in ("results/c1", "results/c2"):
        proc = subprocess.run(
            [exe, *args, "--out", out], capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        summaries.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    first, second = summaries
    assert first["features_computed"] == 80 and first["backbone_builds"] == 1
    # The second run found the detached actor alive: nothing computed, backbone not rebuilt.
    assert second["features_computed"] == 0 and second["backbone_builds"] == 1
    assert second["backbone_forwards"] == 80  # the actor's counters span both runs
    assert second["failures"] == 0 and second["features_via_actor"] is True


def test_unreachable_cluster_is_one_line(capsys):
    port = _free_port()
    assert main(["simulate", "--ray-address", f"127.0.0.1:{port}", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot connect to the Ray cluster" in err and "\n" not in err
