"""A linear head on the pooled payload: the linear-probe baseline (no token mixing on the edge)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from miet_fed.edge.networks import EDGE_NETWORKS, EdgeNetwork, pool_tokens, pooled_dim
from miet_fed.edge.stacked import s_layer_norm, s_linear


@EDGE_NETWORKS.register("linear")
class LinearHead(EdgeNetwork):
    name = "linear"
    accepts = ("tokens", "vector")
    default_gather = "cls"  # the linear probe

    def __init__(self, dim: int, num_classes: int, pool: str, tokens: bool) -> None:
        super().__init__()
        self.pool = pool if tokens else None
        width = pooled_dim(dim, pool) if tokens else dim
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    @classmethod
    def build(cls, payload_shape: tuple[int, ...], num_classes: int, cfg: Any) -> LinearHead:
        return cls(payload_shape[-1], num_classes, cfg.pool, tokens=len(payload_shape) == 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = pool_tokens(x, self.pool) if self.pool else x
        return self.head(self.norm(h))

    def forward_stacked(self, p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        h = pool_tokens(x, self.pool) if self.pool else x
        return s_linear(s_layer_norm(h, p, "norm"), p, "head")
