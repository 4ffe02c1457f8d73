"""Where a computation runs: one resolver for the cloud backbone and the edge cohorts."""

from __future__ import annotations

import os

import torch

from miet_fed.cpus import usable_cpus
from miet_fed.errors import MietError


def resolve_device(name: str, key: str = "model.device") -> torch.device:
    """'auto': a GPU when torch sees one (Ray sets CUDA_VISIBLE_DEVICES for a process that asked
    for GPUs), else the CPU. Asking for CUDA where there is none is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise MietError(
                f"{key}={name!r} but torch sees {count} GPU(s) (a CPU-only torch build, "
                f"or no GPU here); use {key}=auto or cpu"
            )
    return device


#: Environment variable: torch threads of the backbone actor (default: every usable CPU).
THREADS_ENV = "MIET_FED_THREADS"


def cpu_threads() -> int:
    """Intra-op threads for the cloud backbone: $MIET_FED_THREADS, else every usable CPU.

    Every CPU is right for one run (the backbone extracts before round 1, when the cores are
    idle). Several runs on one machine (a sweep run by hand in two shells, the test suite two at
    a time) should set 1: OpenMP threads that spin-wait for a descheduled partner made one tiny
    backbone batch 14 times slower on 2 cores (56 ms with 1 thread, 769 ms with 2, measured
    with another run beside it)."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return usable_cpus()
    if not raw.isdigit() or int(raw) < 1:
        raise MietError(f"{THREADS_ENV}={raw!r} must be a whole number >= 1 (or unset: every CPU)")
    return int(raw)
