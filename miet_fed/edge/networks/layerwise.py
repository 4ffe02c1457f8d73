"""`layerwise`: one low-rank attention block per backbone layer, the all-layers baseline that
needs every z_i separately (the `all` payload, k+1 maps).

h_0 = LN(z_0), h_i = LowRankAttention_i(h_{i-1} + LN_i(z_i)). Designed here, not taken from a
paper: it has the shape of a side network (LST, LAST) but none of their parts (no gated,
down-projected ladder connections into a reduced transformer, no pruning-based initialisation),
so it is named for what it does. Called `ladder` before 2026-12-02; that name says so.
"""

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


@EDGE_NETWORKS.register("layerwise")
class Layerwise(EdgeNetwork):
    name = "layerwise"
    accepts = ("layers",)

    def __init__(self, maps: int, dim: int, num_classes: int, rank: int, heads: int, pool: str):
        super().__init__()
        self.pool = pool
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(maps))
        self.blocks = nn.ModuleList(LowRankAttention(dim, rank, heads) for _ in range(maps - 1))
        self.output_norm = nn.LayerNorm(dim)
        self.head = nn.Linear(pooled_dim(dim, pool), num_classes)

    @classmethod
    def build(cls, payload_shape: tuple[int, ...], num_classes: int, cfg: Any) -> Layerwise:
        maps, _, dim = payload_shape
        return cls(maps, dim, num_classes, cfg.rank, cfg.heads, cfg.pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norms[0](x[:, 0])
        for i, block in enumerate(self.blocks, start=1):
            h = block(h + self.norms[i](x[:, i]))
        return self.head(pool_tokens(self.output_norm(h), self.pool))

    def forward_stacked(self, p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        h = s_layer_norm(x[:, :, 0], p, "norms.0")
        for i, block in enumerate(self.blocks, start=1):
            h = s_low_rank_attention(
                h + s_layer_norm(x[:, :, i], p, f"norms.{i}"), p, f"blocks.{i - 1}", block.heads
            )
        pool = lambda z: pool_tokens(z, self.pool)  # noqa: E731
        return s_norm_pool_linear(h, p, "output_norm", pool, "head")


EDGE_NETWORKS.rename("ladder", "layerwise")
