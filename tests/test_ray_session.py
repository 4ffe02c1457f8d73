"""One Ray instance and backbone actor for many simulations (`ray_session`, used by sweeps):
the second run reuses both, counts only its own backbone work, and writes the same tables as the
same run on a fresh Ray; a change in what Ray's processes inherit starts a fresh instance."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from miet_fed.cli import main
from miet_fed.federation import ray_setup
from miet_fed.federation.client_app import FAULT_ENV
from tests.conftest import TINY, brightness_npz


def _cfg(plugins=()):
    return SimpleNamespace(run=SimpleNamespace(ray_address="", plugins=list(plugins)))


def test_session_key_follows_what_ray_processes_inherit(monkeypatch):
    base = ray_setup._session_key(_cfg(), 2)
    monkeypatch.setenv("MIET_FED_CACHE", "/elsewhere")  # reaches the processes through the spec
    assert ray_setup._session_key(_cfg(), 2) == base
    monkeypatch.setenv(FAULT_ENV, "1:2")  # read inside the workers
    assert ray_setup._session_key(_cfg(), 2) != base
    monkeypatch.delenv(FAULT_ENV)
    assert ray_setup._session_key(_cfg(), 1) != base
    assert ray_setup._session_key(_cfg(["p.py"]), 2) != base
    monkeypatch.chdir("/")  # relative paths resolve in the workers' working directory
    assert ray_setup._session_key(_cfg(), 2) != base


def _simulate(capsys, args: list[str], out: str, strategy: str) -> dict:
    argv = ["simulate", *args, "--set", f"fed.strategy={strategy}", "--out", out]
    assert main([*argv, "--quiet", "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _tables(folder: str) -> dict[str, pd.DataFrame]:
    out = {}
    for name in ("clients.csv", "rounds.csv", "ledger.csv"):
        df = pd.read_csv(Path(folder) / name)
        out[name] = df.drop(columns=[c for c in df.columns if c.endswith("seconds")])
    return out


@pytest.mark.slow
def test_runs_in_a_session_share_ray_and_the_actor_and_mean_the_same(tmp_path, capsys):
    import ray

    brightness_npz(tmp_path / "small.npz", 120, seed=1)
    args = ["--dataset", f"npz:{tmp_path / 'small.npz'}", *TINY]
    for key, value in {
        "data.n_train": 80,
        "data.n_test": 20,
        "fed.num_clients": 4,
        "fed.rounds": 2,
        "fed.partition": "iid",
        "train.epochs": 1,
    }.items():
        args += ["--set", f"{key}={value}"]
    with ray_setup.ray_session():
        _simulate(capsys, args, "results/a", "fedavg")
        job = ray.get_runtime_context().get_job_id()
        (actor,) = ray_setup._SESSION["actors"].values()
        second = _simulate(capsys, args, "results/b", "fedper")
        assert ray.get_runtime_context().get_job_id() == job  # the same Ray instance
        assert list(ray_setup._SESSION["actors"].values()) == [actor]  # and the same actor
    assert not ray.is_initialized()
    fresh = _simulate(capsys, args, "results/fresh", "fedper")  # outside: its own Ray
    assert not ray.is_initialized()
    # The reused actor's counts start at zero: the same as the fresh run's (both read the
    # features the first run computed from the cache).
    for key in ("backbone_forwards", "backbone_builds", "cache_hits", "bytes_served"):
        assert second[key] == fresh[key], key
    for name, table in _tables("results/fresh").items():
        pd.testing.assert_frame_equal(table, _tables("results/b")[name], obj=name)
