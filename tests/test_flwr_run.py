"""`flwr run .`: Flower's own CLI runs our ServerApp and ClientApp from pyproject's [tool.flwr.app].

The slow test runs the real command on a tiny random ViT. `flwr run` starts a detached local
SuperLink that outlives it (and holds a Ray cluster while a run is on), so each test gets its own
FLWR_HOME and port, and afterwards stops every process whose environment carries that FLWR_HOME:
exactly the processes the test started, nothing else on the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from miet_fed.errors import MietError
from miet_fed.federation.runner import run_from_flwr

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


class _Grid:
    def __init__(self, n: int) -> None:
        self.n = n

    def get_node_ids(self) -> list[int]:
        return list(range(100, 100 + self.n))


def _context(**keys: object) -> SimpleNamespace:
    """Flower's run config: the pyproject tables, flattened, with `keys` on top."""
    from miet_fed.config import flatten
    from miet_fed.federation.flwr_app import app_config_tables

    flat = flatten(app_config_tables())
    return SimpleNamespace(run_config={**flat, **keys})


def test_pyproject_app_config_is_the_simulate_config():
    """The Flower-native tables in pyproject.toml equal configs/simulate.toml's settings;
    regenerate them with `python -m miet_fed.federation.flwr_app` when this fails."""
    import tomllib

    from miet_fed.federation.flwr_app import app_config_tables

    app = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    assert app["config"] == app_config_tables()


def _uv_sync_as_flower(project: Path, *extra: str) -> subprocess.CompletedProcess:
    """The command `flwr run` runs before each run (Flower 1.42,
    flwr/supercore/superexec/dependency_installer.py), into a fresh environment."""
    env = dict(
        os.environ,
        UV_PROJECT_ENVIRONMENT=str(project / "runtime-env"),
        UV_CACHE_DIR=str(project / "uv-cache"),  # empty: nothing may come from a warm cache
    )
    cmd = [sys.executable, "-m", "uv", "sync", "--python", sys.executable, "--no-install-project"]
    cmd += ["--no-install-package", "flwr", "--inexact", *extra]
    return subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=120)


def test_flwr_runtime_install_adds_nothing(tmp_path):
    """A plain `flwr run .` must not install a CUDA torch (or anything) on top of what
    `make install` installed: every dependency is overridden away for uv, and the `uv sync`
    Flower runs makes no change, offline."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    deps = list(project["project"]["dependencies"])
    deps += [d for group in project["project"]["optional-dependencies"].values() for d in group]
    overrides = [Requirement(d) for d in project["tool"]["uv"]["override-dependencies"]]
    assert {canonicalize_name(r.name) for r in overrides} == {
        canonicalize_name(Requirement(d).name) for d in deps
    }
    assert all(r.marker is not None and not r.marker.evaluate() for r in overrides)

    if subprocess.run([sys.executable, "-m", "uv", "--version"], capture_output=True).returncode:
        pytest.skip("uv is not installed (Flower needs it only for runtime installs)")
    (tmp_path / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text())
    res = _uv_sync_as_flower(tmp_path, "--offline", "--dry-run")
    assert res.returncode == 0, res.stderr
    assert "Would make no changes" in res.stdout + res.stderr, res.stdout + res.stderr


def test_bad_run_config_is_a_clear_error():
    with pytest.raises(MietError, match="fed.rounds must be >= 1"):
        run_from_flwr(_Grid(2), _context(**{"fed.rounds": 0}))
    with pytest.raises(MietError, match="unknown key 'fed.roundz'"):
        run_from_flwr(_Grid(2), _context(**{"fed.roundz": 3}))
    with pytest.raises(MietError, match="is not section.key"):
        run_from_flwr(_Grid(2), _context(overrides="fed.rounds=3"))
    assert not Path("results").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _started_by(marker: str) -> list[int]:
    """Our processes whose environment holds `marker` (the SuperLink and all it started)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker.encode() in env:
            pids.append(int(proc.name))
    return pids


def _stop_all(marker: str) -> list[int]:
    """SIGTERM, then SIGKILL what is left; returns the pids that needed the SIGKILL."""
    killed: list[int] = []
    for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        pids = _started_by(marker)
        if not pids:
            break
        if sig == signal.SIGKILL:
            killed = pids
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while _started_by(marker) and time.monotonic() < deadline:
            time.sleep(0.2)
    return killed


def _flwr(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "flwr"), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="cleanup reads /proc")
def test_flwr_run_end_to_end(tmp_path, tiny_npz):
    home = tmp_path / "flwr-home"
    out = tmp_path / "out" / "run"
    env = dict(
        os.environ,  # MIET_FED_CACHE points into tmp_path (conftest)
        FLWR_HOME=str(home),
        FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=str(_free_port()),
        FLWR_DISABLE_UPDATE_CHECK="1",
        FLWR_TELEMETRY_ENABLED="0",
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # `flwr` starts `flower-superlink`
    )
    overrides = (
        f"data.dataset='npz:{tiny_npz}' model.name='vit_tiny_patch16_224' "
        "model.weights='random' model.img_size=32 fed.num_clients=5 fed.rounds=2 "
        f"data.n_train=60 data.n_test=20 run.out='{out}'"
    )
    # A plain `flwr run .`: Flower's runtime dependency install (`uv sync`) runs and adds nothing.
    env.pop("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", None)
    marker = f"FLWR_HOME={home}"
    try:
        res = _flwr(
            [
                "run",
                ".",
                "--stream",
                "--federation-config",
                "num-supernodes=2 client-resources-num-cpus=1",
                "--run-config",
                overrides,  # Flower-native keys: no string tunnel
            ],
            env,
            timeout=240,
        )
        log = res.stdout + res.stderr
        assert res.returncode == 0, log
        run_id = log.split("Successfully started run ")[1].split()[0]
        # `flwr run --stream` exits 0 even when the ServerApp raised: ask the SuperLink.
        ls = _flwr(["ls", "--run-id", run_id, "--format", "json"], env, timeout=60)
        status = json.loads(ls.stdout)["runs"][0]
        assert status["status"] == "finished:completed", (status, log)
    finally:
        forced = _stop_all(marker)
    assert not _started_by(marker)
    assert not forced, f"processes ignored SIGTERM: {forced}"

    assert f"results: {out}" in log
    assert "round 2/2" in log
    assert "uv sync took" in log and "Installed:" not in log, log  # ran, installed nothing
    for name in ("summary.json", "clients.csv", "rounds.csv", "partitions.csv", "config.toml"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failures"] == 0
    assert summary["rounds"] == 2 and summary["num_clients"] == 5  # 5 devices on 2 SuperNodes
    assert summary["model"] == "vit_tiny_patch16_224"
    assert summary["features_via_actor"] is False  # no actor under `flwr run`: the disk cache
    rounds = pd.read_csv(out / "rounds.csv")
    assert rounds["round"].tolist() == [1, 2]
    assert (rounds["failures"] == 0).all()
    clients = pd.read_csv(out / "clients.csv")
    assert sorted(clients["client"].unique()) == [0, 1, 2, 3, 4]
    assert set(clients["node"]) == {0, 1}
