"""The CLS token of z_k: the linear-probe payload, one vector per image."""

from __future__ import annotations

from typing import Any

from miet_fed.cloud.gather import GATHERS, Gather


@GATHERS.register("cls")
class ClsGather(Gather):
    name = "cls"
    kind = "vector"
    summary = "CLS token of z_k (linear-probe payload)"

    def payload_shape(self, tokens: int, dim: int, k: int) -> tuple[int, ...]:
        return (dim,)

    def __call__(self, maps: list[Any]) -> Any:
        return maps[-1][:, 0].clone()
