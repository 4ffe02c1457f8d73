"""The `simulate` sections about the network: the devices' links (`[link]`) and the payload
planner that picks each device's format under a budget (`[plan]`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from miet_fed.config.fields import Section, require, setting


@dataclass(frozen=True)
class LinkConfig(Section):
    section: ClassVar[str] = "link"
    up_mbps: float = setting(10.0, "device uplink bandwidth, Mbit/s (median across clients)", gt=0)
    down_mbps: float = setting(
        50.0, "device downlink bandwidth, Mbit/s (median across clients)", gt=0
    )
    latency_ms: float = setting(50.0, "one-way latency per message, ms", ge=0)
    spread: float = setting(
        0.0, "log-normal sigma of per-client bandwidth (0 = identical links)", ge=0
    )


@dataclass(frozen=True)
class PlanConfig(Section):
    """The payload planner (`miet_fed.comm.planner`): each device's own payload format."""

    section: ClassVar[str] = "plan"
    formats: str = setting(
        "",
        "payload formats the cloud may send, comma-separated DTYPE or DTYPE-pN (N x N token "
        "pooling), e.g. 'fp32,int8,int8-p2,int8-p4'; '' = every device gets model.dtype and "
        "model.token_pool",
        check="miet_fed.comm.planner:check_formats_text",
        allowed="'' or DTYPE[-pN],... (DTYPE: fp32, fp16, bf16, int8)",
        added=True,
    )
    budget_seconds: float = setting(
        0.0,
        "each device's one-time payload download must take at most this many seconds at its "
        "own downlink ([link]); 0 = no per-device limit",
        ge=0,
        added=True,
    )
    budget_bytes: float = setting(
        0.0, "all devices' payload downloads together, bytes; 0 = no total limit", ge=0, added=True
    )
    tolerance: float = setting(
        0.0,
        "accuracies within this much of the best a device can take count as equal and the "
        "fewest bytes win (in the accuracy table's units; its seed noise, e.g. 0.01)",
        ge=0,
        added=True,
    )
    accuracy: str = setting(
        "",
        "CSV of format,accuracy measured per format (configs/sweep_formats.toml); '' = the "
        "built-in table (miet_fed/comm/format_accuracy.toml)",
        allowed="'' or PATH.csv",
        added=True,
    )

    def check(self) -> None:
        require(
            bool(self.formats)
            or not (self.budget_seconds or self.budget_bytes or self.accuracy or self.tolerance),
            "plan.budget_seconds, plan.budget_bytes, plan.tolerance and plan.accuracy need "
            "plan.formats (the "
            "formats to choose from), e.g. --set plan.formats=fp32,int8,int8-p2,int8-p4",
        )
