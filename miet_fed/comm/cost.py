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


def gather_payload_shape(gather: str, tokens: int, dim: int, k: int) -> tuple[int, ...]:
    """Shape of one image's payload; delegates to the registered gather (torch-free)."""
    from miet_fed.cloud.gather import get_gather

    return get_gather(gather).payload_shape(tokens, dim, k)


def feature_bytes_per_image(gather: str, tokens: int, dim: int, k: int, dtype: str) -> int:
    """Downlink bytes for one image's gathered features."""
    return encoded_bytes(gather_payload_shape(gather, tokens, dim, k), dtype)


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
