"""Shared fixtures: an isolated cache and results folder per test, and a tiny learnable dataset.

Fast tests use a tiny randomly initialised timm ViT (`vit_tiny_patch16_224` at 32 px), always with
`weights="random"` spelled out; only tests marked `slow` use the real pretrained backbone.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

# Two tests at a time (`make test`: pytest -n 2) on 2 cores: torch's OpenMP threads spin-wait for
# partners the other test has descheduled, and a backbone extraction ran 7 times slower (README,
# "Feature cache"). Passive waiting, set before torch is imported, reaches the subprocesses and
# Ray workers these tests start too.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # Each test worker gets its own share of the CPUs (its affinity mask, which the Ray
    # processes it starts inherit). A simulation sizes its Ray instance and client workers by
    # the CPUs it may use (`miet_fed.cpus`): two tests side by side on 2 cores then start one
    # client worker each instead of two, the second of which only paid its start-up (about 6
    # CPU-seconds: interpreter, torch, Flower) to compete for a core that was not free.
    _cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    _index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    if len(_cpus) >= _WORKERS:
        _share = len(_cpus) // _WORKERS
        os.sched_setaffinity(0, _cpus[_index * _share : (_index + 1) * _share])
    elif _cpus:  # more workers than CPUs: each CPU takes turns (a test's waits leave it free)
        os.sched_setaffinity(0, {_cpus[_index % len(_cpus)]})

TINY = ["--model", "vit_tiny_patch16_224", "--weights", "random", "--img-size", "32"]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Each test gets its own feature cache and results root, and runs from a scratch cwd."""
    monkeypatch.setenv("MIET_FED_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    yield


@pytest.fixture
def flower_run():
    """Flower stamps every Message with the run it belongs to (set by its runtime): tests that
    build Messages by hand set one."""
    from flwr.supercore.task_identity import TaskIdentity

    before = TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = before


def brightness_npz(path, n: int, seed: int):
    """n 16x16 grey images in 3 classes told apart by brightness alone; returns the path."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = (rng.integers(0, 60, size=(n, 16, 16)) + (y * 60)[:, None, None]).astype(np.uint8)
    np.savez(path, x=x, y=y)
    return path


def make_tiny_npz(path):
    """120 16x16 grey images in 3 classes told apart by brightness and a stripe: learnable fast."""
    rng = np.random.default_rng(0)
    n, classes = 120, 3
    y = np.arange(n) % classes
    x = rng.integers(0, 60, size=(n, 16, 16)).astype(np.int64)
    x += (y * 60)[:, None, None]
    for i in range(n):
        x[i, :, 4 * y[i] : 4 * y[i] + 3] = 255
    np.savez(path, x=np.clip(x, 0, 255).astype(np.uint8), y=y)
    return path


def load_script(name: str):
    """A script of simulations/ as a module (they are run as files, not imported as a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "simulations" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tiny_npz(tmp_path):
    return make_tiny_npz(tmp_path / "tiny.npz")
