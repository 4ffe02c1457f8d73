"""Communication cost model: pure functions of the configuration, no torch.

Every byte the ledger measures from real serialized tensors must equal what these functions predict;
tests hold the two together. Formulas follow the paper's definitions (see README, Cost model).
"""

from __future__ import annotations

import math

from miet_fed.errors import MietError

#: Storage/transport dtypes of the feature payload and their bytes per element.
DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}
#: int8 carries one fp32 scale per token (per vector for the `cls` payload).
INT8_SCALE_BYTES = 4


def check_dtype(dtype: str) -> str:
    if dtype not in DTYPE_BYTES:
        raise MietError(f"unknown feature dtype '{dtype}'; valid: {', '.join(DTYPE_BYTES)}")
    return dtype


def encoded_bytes(shape: tuple[int, ...], dtype: str) -> int:
    """Bytes of one payload of `shape` as `dtype` (int8: values plus one scale per row)."""
    check_dtype(dtype)
    elements = math.prod(shape)
    total = elements * DTYPE_BYTES[dtype]
    if dtype == "int8":
        total += (elements // shape[-1]) * INT8_SCALE_BYTES
    return total


def pool_values(tokens: int, prefix: int) -> list[int]:
    """Valid `model.token_pool` values: the divisors of the side of the square patch grid."""
    side = math.isqrt(tokens - prefix)
    return [p for p in range(1, side + 1) if side % p == 0]


def pooled_tokens(tokens: int, prefix: int, pool: int) -> int:
    """Tokens after averaging each pool x pool block of the patch grid; prefix tokens (CLS,
    registers) are kept as they are."""
    if pool < 1:
        raise MietError(f"model.token_pool must be >= 1, got {pool}")
    side = math.isqrt(tokens - prefix)
    if side * side != tokens - prefix:
        raise MietError(f"{tokens - prefix} patch tokens do not form a square grid; no pooling")
    if side % pool:
        valid = ", ".join(map(str, pool_values(tokens, prefix)))
        raise MietError(
            f"model.token_pool={pool} does not divide the {side}x{side} patch grid; valid: {valid}"
        )
    return prefix + (side // pool) ** 2


def format_shape(
    shape: tuple[int, ...],
    kind: str,
    prefix: int = 1,
    token_pool: int = 1,
    proj_rank: int = 0,
) -> tuple[int, ...]:
    """A gathered payload's shape after token pooling (token maps only) and projection of the
    channel dimension to `proj_rank` (0 = kept). Checks both against the shape."""
    if token_pool != 1:
        if kind == "vector":
            raise MietError(
                f"model.token_pool={token_pool} pools a token grid but the payload is one vector "
                "(gather cls); use model.token_pool=1 or a token-map gather"
            )
        shape = (*shape[:-2], pooled_tokens(shape[-2], prefix, token_pool), shape[-1])
    if proj_rank:
        if not 0 < proj_rank <= shape[-1]:
            raise MietError(
                f"model.proj_rank={proj_rank} is larger than the payload dimension {shape[-1]}; "
                f"use 0 (no projection) .. {shape[-1]}"
            )
        shape = (*shape[:-1], proj_rank)
    return shape


def gather_payload_shape(
    gather: str,
    tokens: int,
    dim: int,
    k: int,
    prefix: int = 1,
    token_pool: int = 1,
    proj_rank: int = 0,
) -> tuple[int, ...]:
    """Shape of one image's payload, pooled and projected as asked; delegates to the
    registered gather (torch-free)."""
    from miet_fed.cloud.gather import get_gather

    g = get_gather(gather)
    return format_shape(g.payload_shape(tokens, dim, k), g.kind, prefix, token_pool, proj_rank)


def feature_bytes_per_image(
    gather: str,
    tokens: int,
    dim: int,
    k: int,
    dtype: str,
    prefix: int = 1,
    token_pool: int = 1,
    proj_rank: int = 0,
) -> int:
    """Downlink bytes for one image's gathered features (pooled and projected as asked)."""
    shape = gather_payload_shape(gather, tokens, dim, k, prefix, token_pool, proj_rank)
    return encoded_bytes(shape, dtype)


def raw_image_bytes(height: int, width: int, channels: int) -> int:
    """Uplink bytes of one uint8 image as the device holds it."""
    return height * width * channels


def vit_token_count(img_size: int, patch: int, prefix_tokens: int = 1) -> int:
    """Tokens of a ViT at `img_size`: (img_size // patch)^2 patches plus CLS/register tokens."""
    return (img_size // patch) ** 2 + prefix_tokens


def weight_exchange_bytes(
    shared_params: int, participants: int, rounds: int, bytes_per_param: int = 4
) -> int:
    """Federated weight traffic, FedPara convention: down and up, per participant per round."""
    return 2 * participants * shared_params * bytes_per_param * rounds


# ---- Edge network parameters ------------------------------------------------------------------
# Counted on the network itself (`miet_fed.edge.networks.param_counts`, built on the meta
# device), so a new network needs no formula here.

#: Parts of an edge network a federated strategy can share (mirrors `federation.sharing.PARTS`).
SHARE_PARTS = ("all", "body", "head", "none")


def shared_params(counts: dict[str, int], share: str) -> int:
    """Parameters that cross the network when a strategy shares `share` (all/body/head/none)."""
    if share == "all":
        return counts["total"]
    if share in ("body", "head"):
        return counts[share]
    if share == "none":
        return 0
    raise MietError(f"unknown shared part '{share}'; valid: {', '.join(SHARE_PARTS)}")


def run_param_bytes(
    shared: int, participants_per_round: list[int] | int, rounds: int, bytes_per_param: int = 4
) -> int:
    """Weight traffic of a whole run: down + up for each participant of each round.

    `participants_per_round` is one count for every round, or a list with one count per round
    (its length must be `rounds`). Equals `weight_exchange_bytes` for a constant count.
    """
    if isinstance(participants_per_round, int):
        return weight_exchange_bytes(shared, participants_per_round, rounds, bytes_per_param)
    counts = list(participants_per_round)
    if len(counts) != rounds:
        raise ValueError(f"{len(counts)} participant counts given for {rounds} rounds")
    return sum(weight_exchange_bytes(shared, p, 1, bytes_per_param) for p in counts)
