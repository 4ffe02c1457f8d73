"""Edge networks: the only trainable part, run on the device on top of the gathered payload.

Each network is registered by name (one file each in this package), declares which payload kind
it consumes (see `miet_fed.cloud.gather.PAYLOAD_KINDS`), and keeps its classifier in `self.head`
so that federated strategies can share or keep the head and the body separately.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from miet_fed.errors import MietError
from miet_fed.registry import Registry

HEAD_PREFIX = "head."


class EdgeNetwork(nn.Module):
    """Base class: subclasses set `name`, `accepts` and implement `build` and `forward`.

    A network may also implement `forward_stacked(params, x)`: the same computation for many
    devices at once, every parameter with a leading device axis [C, ...] and x [C, B, ...]
    (see `miet_fed.edge.stacked`); without it, cohorts of devices train in a loop.
    """

    name: ClassVar[str]
    accepts: ClassVar[tuple[str, ...]]
    #: the gather it is meant to read (`miet-fed cost` prices it on that payload); "" = the
    #: first gather whose payload kind it accepts, Gather* (model.gather's default) first
    default_gather: ClassVar[str] = ""

    @classmethod
    def build(cls, payload_shape: tuple[int, ...], num_classes: int, cfg: Any) -> EdgeNetwork:
        raise NotImplementedError

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def head_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if n.startswith(HEAD_PREFIX)]

    def body_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.startswith(HEAD_PREFIX)]

    def head_keys(self) -> list[str]:
        return [k for k in self.state_dict() if k.startswith(HEAD_PREFIX)]

    def body_keys(self) -> list[str]:
        return [k for k in self.state_dict() if not k.startswith(HEAD_PREFIX)]


EDGE_NETWORKS: Registry[type[EdgeNetwork]] = Registry("edge network", __name__)


def build_edge_network(
    name: str, payload_kind: str, payload_shape: tuple[int, ...], num_classes: int, cfg: Any
) -> EdgeNetwork:
    cls = EDGE_NETWORKS.get(name)
    if payload_kind not in cls.accepts:
        fits = [n for n in EDGE_NETWORKS.names() if payload_kind in EDGE_NETWORKS.get(n).accepts]
        raise MietError(
            f"edge network '{name}' consumes {'/'.join(cls.accepts)} payloads but the gather sends "
            f"'{payload_kind}'; use --edge {' or '.join(fits)}"
        )
    return cls.build(payload_shape, num_classes, cfg)


def param_counts(
    name: str, payload_kind: str, payload_shape: tuple[int, ...], num_classes: int, cfg: Any
) -> dict[str, int]:
    """{"head", "body", "total"} parameters, counted on the network itself (built on the meta
    device: no memory, no weights), so a new network needs no formula kept in step with it."""
    with torch.device("meta"):
        net = build_edge_network(name, payload_kind, payload_shape, num_classes, cfg)
    head = sum(p.numel() for p in net.head_parameters())
    body = sum(p.numel() for p in net.body_parameters())
    return {"head": head, "body": body, "total": head + body}


def gathers_for(edge: str) -> list[str]:
    """The registered gathers whose payload `edge` can read: the default gather first."""
    from miet_fed.cloud.gather import GATHERS, gather_names

    accepts = EDGE_NETWORKS.get(edge).accepts
    return [n for n in gather_names() if GATHERS.get(n).kind in accepts]


def default_gather(edge: str) -> str:
    """The payload `edge` is priced on unless told otherwise."""
    return EDGE_NETWORKS.get(edge).default_gather or gathers_for(edge)[0]


def check_pair(edge: str, payload_kind: str) -> None:
    """Fail early (before any backbone work) on an edge network that cannot read the payload."""
    cls = EDGE_NETWORKS.get(edge)
    if payload_kind not in cls.accepts:
        build_edge_network(edge, payload_kind, (), 0, None)


class LowRankAttention(nn.Module):
    """Pre-norm self-attention computed in rank r << d, projected back up, added residually.

    The up-projection starts at zero, so each block starts as the identity (as LoRA's B does).
    """

    def __init__(self, dim: int, rank: int, heads: int) -> None:
        super().__init__()
        if rank % heads:
            raise MietError(f"edge rank {rank} must be divisible by heads {heads}")
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * rank)
        self.up = nn.Linear(rank, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(b, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        a = nn.functional.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return x + self.up(a.transpose(1, 2).reshape(b, t, -1))


def pool_tokens(x: torch.Tensor, pool: str) -> torch.Tensor:
    """[..., T, D] -> [..., D'] by the CLS token, the mean of the others, or both concatenated
    (leading axes: a batch, or devices and a batch in the stacked form)."""
    if pool == "cls":
        return x[..., 0, :]
    if pool == "mean":
        return x[..., 1:, :].mean(dim=-2)
    return torch.cat([x[..., 0, :], x[..., 1:, :].mean(dim=-2)], dim=-1)


def pooled_dim(dim: int, pool: str) -> int:
    return 2 * dim if pool == "cls+mean" else dim


POOLS = ("cls", "mean", "cls+mean")
