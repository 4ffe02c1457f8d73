"""z_0 .. z_k kept separate: the side-tuning (LST/LAST) payload, k+1 times the bytes of Gather*."""

from __future__ import annotations

from typing import Any

from miet_fed.cloud.gather import GATHERS, Gather


@GATHERS.register("all")
class AllGather(Gather):
    name = "all"
    kind = "layers"
    summary = "z_0 .. z_k separately (side-tuning payload, k+1 maps)"

    def payload_shape(self, tokens: int, dim: int, k: int) -> tuple[int, ...]:
        return (k + 1, tokens, dim)

    def __call__(self, maps: list[Any]) -> Any:
        import torch

        return torch.stack(maps, dim=1)
