"""The wire format of the feature payload: what the cloud serializes and the edge decodes.

A payload is encoded into named tensors (values, and for int8 a per-row scale); the bytes that cross
the network are exactly the bytes of those tensors, so the ledger and the cache measure the same
thing and both agree with `miet_fed.comm.cost.encoded_bytes`.
"""

from __future__ import annotations

import torch

from miet_fed.comm.cost import check_dtype

_TORCH = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def encode(x: torch.Tensor, dtype: str) -> dict[str, torch.Tensor]:
    """x: [B, *payload] float -> named tensors in the wire dtype."""
    check_dtype(dtype)
    if dtype in _TORCH:
        return {"values": x.to(_TORCH[dtype]).contiguous()}
    x = x.float()
    scale = x.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12) / 127.0
    q = torch.round(x / scale).clamp_(-127, 127).to(torch.int8)
    return {"values": q.contiguous(), "scale": scale.contiguous()}


def decode(parts: dict[str, torch.Tensor]) -> torch.Tensor:
    """Named wire tensors -> float32 payload, as the edge network consumes it."""
    values = parts["values"]
    if values.dtype == torch.int8:
        return values.float() * parts["scale"]
    return values.float()


def nbytes(parts: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in parts.values())


def select(parts: dict[str, torch.Tensor], index: torch.Tensor | slice) -> dict[str, torch.Tensor]:
    return {k: v[index] for k, v in parts.items()}
