"""The communication ledger: every transfer of a run as a row, from the bytes clients measured.

Clients report what they sent and received in each reply (images and features on first contact,
parameters every round they take part, their metrics message). `build_ledger` turns those replies
into rows (round, client, phase, direction, kind, bytes, wire_bytes); `model_bytes` predicts the
same totals from the configuration and the run's participation alone, and the two must agree.

`bytes` counts payload: raw uint8 image bytes, encoded feature tensors, parameter tensors, and the
metrics message as serialized. `wire_bytes` adds Flower's framing for parameters (protobuf around
.npy-encoded arrays): measured, reported, not modelled.
"""

from __future__ import annotations

import pandas as pd

#: reply field -> (direction, kind)
FIELDS = {
    "images_up_bytes": ("up", "image"),
    "features_down_bytes": ("down", "feature"),
    "params_down_bytes": ("down", "params"),
    "params_up_bytes": ("up", "params"),
    "metrics_up_bytes": ("up", "metrics"),
}
WIRE = {"params_down_bytes": "params_down_wire_bytes", "params_up_bytes": "params_up_wire_bytes"}
KINDS = ("image", "feature", "params", "metrics")
COLUMNS = ["round", "client", "phase", "direction", "kind", "bytes", "wire_bytes"]


def build_ledger(replies: pd.DataFrame) -> pd.DataFrame:
    """replies: one row per successful client reply (round, client, phase, *_bytes fields)."""
    parts = []
    for field, (direction, kind) in FIELDS.items():
        if field not in replies:
            continue
        rows = replies[replies[field].notna()]
        wire = rows[WIRE[field]] if field in WIRE and WIRE[field] in rows else rows[field]
        parts.append(
            pd.DataFrame(
                {
                    "round": rows["round"].astype(int),
                    "client": rows["client"].astype(int),
                    "phase": rows["phase"],
                    "direction": direction,
                    "kind": kind,
                    "bytes": rows[field].astype("int64"),
                    "wire_bytes": wire.astype("int64"),
                }
            )
        )
    if not parts:
        return pd.DataFrame(columns=COLUMNS)
    ledger = pd.concat(parts, ignore_index=True)
    ledger = ledger[ledger["bytes"] > 0]
    return ledger.sort_values(["round", "client", "phase", "direction", "kind"]).reset_index(
        drop=True
    )[COLUMNS]


def totals(ledger: pd.DataFrame) -> dict[str, int]:
    by_kind = ledger.groupby("kind")["bytes"].sum()
    return {kind: int(by_kind.get(kind, 0)) for kind in KINDS}


def model_bytes(
    image_bytes: int,
    feature_bytes: int,
    contacted_images: int,
    shared_params: int,
    train_replies: int,
    eval_replies: int,
    bytes_per_param: int = 4,
    feature_total: int | None = None,
) -> dict[str, int]:
    """What the ledger must hold, from the config and the participation alone (no metrics).

    contacted_images: images of the clients that took part at least once (each uploads its
    images and downloads their features exactly once). Parameters go down to every client in
    training and evaluation, and come back up from training. `feature_total` replaces
    contacted_images * feature_bytes where devices receive different payload formats (a plan):
    the sum over contacted devices of their images times their format's bytes per image.
    """
    return {
        "image": contacted_images * image_bytes,
        "feature": contacted_images * feature_bytes if feature_total is None else feature_total,
        "params": shared_params * bytes_per_param * (2 * train_replies + eval_replies),
    }
