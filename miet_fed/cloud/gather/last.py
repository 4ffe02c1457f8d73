"""The last gathered block's tokens z_k alone: same bytes as Gather*, no intermediate features."""

from __future__ import annotations

from typing import Any

from miet_fed.cloud.gather import GATHERS, Gather


@GATHERS.register("last")
class LastGather(Gather):
    name = "last"
    kind = "tokens"
    summary = "z_k only (all tokens of the last block)"

    def payload_shape(self, tokens: int, dim: int, k: int) -> tuple[int, ...]:
        return (tokens, dim)

    def __call__(self, maps: list[Any]) -> Any:
        return maps[-1].clone()
