"""Per-round checkpoints: what is saved round-trips exactly, a resume uses only committed rounds,
and a simulation killed hard (SIGKILL of its whole process group) resumes to the same tables."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from flwr.app import Array, ArrayRecord

from miet_fed.config import SimulateConfig
from miet_fed.federation import checkpoint as ck
from miet_fed.federation.cohorts import Registry
from miet_fed.federation.device_store import DeviceStore
from miet_fed.federation.flower_compat import restore_state, strategy_state


def _record(seed: int) -> ArrayRecord:
    rng = np.random.default_rng(seed)
    # Insertion order is not sorted on purpose: it must survive the round trip.
    return ArrayRecord(
        {
            "z.weight": Array(rng.normal(size=(3, 4)).astype(np.float32)),
            "a.bias": Array(rng.normal(size=(4,)).astype(np.float32)),
        }
    )


def _same(a: ArrayRecord, b: ArrayRecord) -> bool:
    return list(a) == list(b) and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def _devices(n: int = 10, **last: int) -> dict[str, np.ndarray]:
    registry = Registry(n)
    for device, r in last.items():
        registry.last_round[int(device[1:])] = r
        registry.contacted[int(device[1:])] = 1
    return registry.state()


def _state(seed: int) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v.numpy()) for k, v in _record(seed).items()}


def test_server_state_round_trips_fedadam_and_fedavgm(tmp_path):
    from flwr.serverapp.strategy import FedAdam, FedAvgM

    from miet_fed.federation.strategies import get_strategy

    cfg = SimulateConfig()
    path, last = ck.open_checkpoint(tmp_path / "results" / "run", cfg)
    assert last == 0 and Path(path).is_absolute()
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"round": 0}\n{"round": 1, "error": "x"}\n')

    adam = FedAdam()
    adam.m_t = {"w": np.arange(3.0)}  # float64 moments: kept as float64
    adam.v_t = {"w": np.ones(3) * 0.5}
    adam.current_arrays = {"w": np.zeros(3, np.float32)}
    state = strategy_state(adam, get_strategy("fedadam").server_state)
    ck.save_server(path, 1, _record(0), state, _devices(d3=1), rows)
    fresh = FedAdam()
    arrays, rows_back, state_back, devices = ck.load_server(path, 1)
    restore_state(fresh, state_back)
    assert _same(arrays, _record(0)) and rows_back.read_text() == rows.read_text()
    assert fresh.m_t["w"].dtype == np.float64 and np.array_equal(fresh.m_t["w"], adam.m_t["w"])
    assert np.array_equal(fresh.v_t["w"], adam.v_t["w"])
    assert devices["last_round"][3] == 1 and devices["contacted"].tolist()[:4] == [0, 0, 0, 1]

    avgm = FedAvgM(server_momentum=0.9)
    avgm.momentum_vector = [np.full((2, 2), 0.25, np.float32), np.zeros(3, np.float32)]
    avgm.current_arrays = _record(5)
    state = strategy_state(avgm, get_strategy("fedavgm").server_state)
    ck.save_server(path, 2, _record(1), state, _devices(), rows)
    assert sorted(p.name for p in Path(path).glob("server-r*")) == ["server-r2.safetensors"]
    fresh = FedAvgM(server_momentum=0.9)
    arrays, _, state_back, _ = ck.load_server(path, 2)
    restore_state(fresh, state_back)
    assert _same(arrays, _record(1)) and _same(fresh.current_arrays, _record(5))
    assert [m.shape for m in fresh.momentum_vector] == [(2, 2), (3,)]
    assert ck.committed_round(Path(path)) == 2


def test_resume_uses_only_committed_rounds(tmp_path):
    cfg = SimulateConfig()
    out = tmp_path / "results" / "run"
    path, _ = ck.open_checkpoint(out, cfg)
    store = DeviceStore(Path(path) / ck.CLIENTS)
    rows = tmp_path / "rows.jsonl"
    rows.write_text("{}\n")
    store.save(3, 1, {"net": _state(1)})
    store.save(3, 2, {"net": _state(2), "ditto-personal": _state(7)})
    ck.save_server(path, 2, _record(0), {}, _devices(d3=2), rows)
    store.drop(3, 1)  # what the server does once round 2 is committed
    # round 3 was cut half-way: devices 3 and 5 trained, no commit
    store.save(3, 3, {"net": _state(3)})
    store.save(5, 3, {"net": _state(3)})

    path2, last = ck.open_checkpoint(out, cfg)
    assert (path2, last) == (path, 2)
    _, _, _, devices = ck.load_server(path, last)
    assert devices["last_round"][3] == 2 and devices["last_round"][5] == 0
    slots = store.load(3, int(devices["last_round"][3]))
    assert torch.equal(slots["net"]["a.bias"], _state(2)["a.bias"])
    assert torch.equal(slots["ditto-personal"]["z.weight"], _state(7)["z.weight"])
    assert not store.path(3, 3).exists() and not store.path(5, 3).exists()  # cut round dropped
    assert store.load(5, 0) == {}  # never saved

    other = replace(cfg, train=replace(cfg.train, lr=0.5))
    _, last = ck.open_checkpoint(out, other)  # other settings: a fresh start, not a mix
    assert last == 0 and not store.path(3, 2).exists()
    elsewhere = replace(
        other,
        run=replace(other.run, progress=False, ray_address="auto", backbone_gpus=1.0),
        model=replace(other.model, device="cpu", batch_size=8),
    )
    ck.save_server(path, 1, _record(0), {}, _devices(), rows)
    assert ck.open_checkpoint(out, elsewhere) == (path, 1)  # runtime-only keys may differ

    off = replace(cfg, run=replace(cfg.run, checkpoint=False))
    assert ck.open_checkpoint(out, off) == ("", 0)


@pytest.mark.slow
def test_simulation_killed_hard_resumes_to_the_same_tables(tmp_path, capsys):
    """Ditto keeps a personal model per client (client state) on top of the shared one, in a
    three-task federation (a head per task, each device on its own task's data). The run that
    is killed is a process of its own; the reference and the resume run here, in one Ray
    session (`miet_fed.cli.main`, as the console script runs it)."""
    from miet_fed.cli import main
    from miet_fed.config import build_config, to_toml
    from miet_fed.federation.ray_setup import ray_session
    from tests.test_tasks import MODEL, _tasks

    data = {
        "model": MODEL,
        "data": {"tasks": _tasks(tmp_path)},
        "fed": {"num_clients": 8, "clients_per_round": 6, "rounds": 5, "strategy": "ditto"},
        "train": {"epochs": 1},
    }
    config = tmp_path / "tasks.toml"
    config.write_text(to_toml(build_config(SimulateConfig, data)))
    exe = str(Path(sys.executable).with_name("miet-fed"))
    args = ["simulate", str(config), "--quiet"]

    def run(out: str) -> dict:
        assert main([*args, "--out", out, "--json"]) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    env = dict(os.environ)  # the killed run's own Ray instance, not the session's
    with ray_session():
        assert run("results/ref")["resumed_after_round"] == 0
        proc = subprocess.Popen(
            [exe, *args, "--out", "results/cut"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: the kill takes Ray's processes too
        )
        server = Path("results/.cut.ckpt/server.json")
        deadline = time.time() + 180
        while time.time() < deadline and ck.committed_round(server.parent) < 2:
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        cut_at = ck.committed_round(server.parent)
        assert 2 <= cut_at < 5, "the kill must land before the run finished"
        assert not Path("results/cut").exists()  # nothing half-written is visible
        summary = run("results/cut")
    assert summary["resumed_after_round"] == cut_at and summary["failures"] == 0
    assert not server.parent.exists()  # the checkpoint goes once the results are in place
    for name in ("clients.csv", "rounds.csv", "ledger.csv", "partitions.csv"):
        a, b = (pd.read_csv(Path(d) / name) for d in ("results/ref", "results/cut"))
        timing = [c for c in a.columns if c.endswith("seconds") and c != "comm_seconds"]
        pd.testing.assert_frame_equal(
            a.drop(columns=timing), b.drop(columns=timing), check_exact=True, obj=name
        )


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_stops_cleanly_and_keeps_the_checkpoint(sig, code, tmp_path):
    """Ctrl-C or a scheduler's SIGTERM mid-run: a prompt exit (Flower's server thread would
    otherwise wait up to an hour for replies; Ray's own handlers would abort or hang), one line,
    nothing in results/, Ray's processes gone, and the committed rounds kept for a resume."""
    from tests.conftest import TINY, brightness_npz

    brightness_npz(tmp_path / "small.npz", 120, seed=1)
    exe = str(Path(sys.executable).with_name("miet-fed"))
    cmd = [exe, "simulate", "--dataset", f"npz:{tmp_path / 'small.npz'}", *TINY, "--quiet"]
    for pair in ("data.n_train=80", "data.n_test=20", "fed.num_clients=4", "fed.rounds=30"):
        cmd += ["--set", pair]
    proc = subprocess.Popen(
        [*cmd, "--out", "results/s"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a stray process group would be ours to clean up below
    )
    ckpt = Path("results/.s.ckpt")
    deadline = time.time() + 180
    while time.time() < deadline and ck.committed_round(ckpt) < 1:
        time.sleep(0.05)
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # Ctrl-C in a terminal: the whole foreground group, Ray too
    else:
        proc.send_signal(sig)  # `kill PID`: the command alone
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == code, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("miet-fed: ") and "resumes from its last complete round" in last
    assert "Traceback" not in err
    assert [p.name for p in Path("results").iterdir()] == [".s.ckpt"]
    assert 1 <= ck.committed_round(ckpt) < 30
    deadline = time.time() + 20
    while time.time() < deadline and _group_alive(proc.pid):
        time.sleep(0.2)
    assert not _group_alive(proc.pid), "Ray processes of the stopped run are still running"


def _group_alive(pgid: int) -> bool:
    """Any live (not zombie) process left in the process group?"""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def test_changed_data_is_not_resumed(tmp_path, capsys):
    cfg = SimulateConfig()
    out = tmp_path / "results" / "run"
    path, last = ck.open_checkpoint(out, cfg)
    assert ck.check_data(path, last, "data-v1") == 0
    rows = tmp_path / "rows.jsonl"
    rows.write_text("{}\n")
    store = DeviceStore(Path(path) / ck.CLIENTS)
    store.save(0, 1, {"net": _state(1)})
    ck.save_server(path, 1, _record(0), {}, _devices(d0=1), rows)
    path, last = ck.open_checkpoint(out, cfg)
    assert ck.check_data(path, last, "data-v1") == 1  # same data: resume
    assert ck.check_data(path, last, "data-v2") == 0  # edited in between: start over
    assert "dataset changed" in capsys.readouterr().err
    assert ck.committed_round(Path(path)) == 0
    assert not store.path(0, 1).exists()
