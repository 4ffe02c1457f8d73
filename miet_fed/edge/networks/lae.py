"""LAE: the low-rank attention edge network that MIET trains on the Gather* token map."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from miet_fed.edge.networks import (
    EDGE_NETWORKS,
    EdgeNetwork,
    LowRankAttention,
    pool_tokens,
    pooled_dim,
)
from miet_fed.edge.stacked import s_layer_norm, s_low_rank_attention, s_norm_pool_linear


@EDGE_NETWORKS.register("lae")
class LAE(EdgeNetwork):
    """LayerNorm on the payload, `blocks` low-rank attention blocks, pooling, a linear head."""

    name = "lae"
    accepts = ("tokens",)

    def __init__(self, dim: int, num_classes: int, rank: int, blocks: int, heads: int, pool: str):
        super().__init__()
        self.pool = pool
        self.input_norm = nn.LayerNorm(dim)
        self.blocks = nn.ModuleList(LowRankAttention(dim, rank, heads) for _ in range(blocks))
        self.output_norm = nn.LayerNorm(dim)
        self.head = nn.Linear(pooled_dim(dim, pool), num_classes)

    @classmethod
    def build(cls, payload_shape: tuple[int, ...], num_classes: int, cfg: Any) -> LAE:
        return cls(payload_shape[-1], num_classes, cfg.rank, cfg.blocks, cfg.heads, cfg.pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.input_norm(x)
        for block in self.blocks:
            h = block(h)
        return self.head(pool_tokens(self.output_norm(h), self.pool))

    def forward_stacked(self, p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        h = s_layer_norm(x, p, "input_norm")
        for i, block in enumerate(self.blocks):
            h = s_low_rank_attention(h, p, f"blocks.{i}", block.heads)
        pool = lambda z: pool_tokens(z, self.pool)  # noqa: E731
        return s_norm_pool_linear(h, p, "output_norm", pool, "head")
