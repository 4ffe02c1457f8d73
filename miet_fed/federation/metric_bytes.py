"""Serialized sizes of the metrics a device sends (a MetricRecord), without serializing: the
ledger counts each device's metrics as the bytes Flower would put on the wire for it alone."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from flwr.app import MetricRecord
from flwr.common.serde import metric_record_to_proto


@lru_cache(maxsize=65536)
def _entry_bytes(key: str, kind: type, value: int) -> int:
    """Serialized size of one MetricRecord item (a double's is fixed: its value is not a key)."""
    return metric_record_to_proto(MetricRecord({key: kind(value)})).ByteSize()


def metric_record_bytes(values: dict[str, Any]) -> int:
    """`metric_record_to_proto(MetricRecord(values)).ByteSize()` without building the record:
    a MetricRecord is a repeated field of items, so its size is the sum of its items' sizes
    (tested against the real serializer)."""
    return sum(
        _entry_bytes(k, int, v) if isinstance(v, int) else _entry_bytes(k, float, 0)
        for k, v in values.items()
    )


def with_own_size(values: dict[str, Any]) -> dict[str, Any]:
    """A device's metrics plus the serialized size of the MetricRecord it would send alone."""
    values = {**values, "metrics_up_bytes": 0}
    rest = metric_record_bytes(values) - _entry_bytes("metrics_up_bytes", int, 0)
    for _ in range(3):  # the size field's own varint can change the size: iterate to a fixpoint
        values["metrics_up_bytes"] = rest + _entry_bytes(
            "metrics_up_bytes", int, values["metrics_up_bytes"]
        )
    return values
