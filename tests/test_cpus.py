"""A run sizes its Ray instance and client workers by the CPUs it may use (its affinity mask:
taskset, a container's cpuset, a batch scheduler's share), not by the machine's count."""

from __future__ import annotations

import os

import pytest

from miet_fed.config import SimulateConfig
from miet_fed.cpus import usable_cpus
from miet_fed.federation.cohorts import num_nodes
from miet_fed.federation.ray_setup import local_cpus
from miet_fed.federation.runner import client_workers
from miet_fed.torch_device import THREADS_ENV, cpu_threads

affinity = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no affinity mask")


@affinity
def test_usable_cpus_is_the_affinity_mask():
    assert usable_cpus() == len(os.sched_getaffinity(0)) <= (os.cpu_count() or 1)


@affinity
def test_a_run_pinned_to_one_cpu_starts_one_client_worker(monkeypatch):
    """Pinned to one CPU (as `taskset -c 0 miet-fed simulate` would), the default packing is
    one cohort node, Ray is offered one CPU and the backbone one thread, on any machine."""
    monkeypatch.delenv(THREADS_ENV, raising=False)
    cfg = SimulateConfig()
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(before)})
        workers = client_workers(cfg)
        assert workers == 1
        assert num_nodes(cfg.fed.num_clients, 0, workers) == 1
        assert local_cpus(4, cfg.fed.cpus_per_client, usable_cpus()) == 1
        assert cpu_threads() == 1
    finally:
        os.sched_setaffinity(0, before)
    assert client_workers(cfg) == max(1, int(len(before) // cfg.fed.cpus_per_client))
