"""Gather functions: how the cloud compresses the backbone's token maps z_0..z_k into one payload.

A gather is registered by name (one file each in this package). It declares the payload's kind and
shape as pure functions of (tokens, dim, k), so the cost model can price it without torch, and
applies itself to the list of token maps [z_0, ..., z_k], each a tensor [B, T, D].
"""

from __future__ import annotations

from typing import Any, ClassVar

from miet_fed.registry import Registry

#: What an edge network receives per image: "tokens" [T, D], "layers" [k+1, T, D], "vector" [D].
PAYLOAD_KINDS = ("tokens", "layers", "vector")


class Gather:
    """Base class: subclasses set `name`, `kind` and implement `payload_shape` and `__call__`."""

    name: ClassVar[str]
    kind: ClassVar[str]
    summary: ClassVar[str] = ""

    def payload_shape(self, tokens: int, dim: int, k: int) -> tuple[int, ...]:
        raise NotImplementedError

    def __call__(self, maps: list[Any]) -> Any:
        """maps: [z_0, ..., z_k], each [B, T, D]; returns [B, *payload_shape]."""
        raise NotImplementedError


GATHERS: Registry[type[Gather]] = Registry("gather function", __name__)


def get_gather(name: str) -> Gather:
    return GATHERS.get(name)()


def gather_names() -> list[str]:
    """Every registered gather (plugins included), the default one (Gather*) first."""
    from miet_fed.config import ModelConfig

    first = ModelConfig().gather
    return [first, *(n for n in GATHERS.names() if n != first)]
