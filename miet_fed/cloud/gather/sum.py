"""Gather* (MIET): the element-wise sum z_0 + z_1 + ... + z_k, one token map whatever k is."""

from __future__ import annotations

from typing import Any

from miet_fed.cloud.gather import GATHERS, Gather


@GATHERS.register("sum")
class SumGather(Gather):
    name = "sum"
    kind = "tokens"
    summary = "Gather*: z_0 + ... + z_k (one map, the paper's minimal interaction)"

    def payload_shape(self, tokens: int, dim: int, k: int) -> tuple[int, ...]:
        return (tokens, dim)

    def __call__(self, maps: list[Any]) -> Any:
        out = maps[0].clone()
        for z in maps[1:]:
            out += z
        return out
