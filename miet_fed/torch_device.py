"""Where a computation runs: one resolver for the cloud backbone and the edge cohorts."""

from __future__ import annotations

import torch

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
