"""Small tables printed at the end of a simulation."""

from __future__ import annotations

from typing import Any

import pandas as pd


def simulate_table(summary: dict[str, Any]) -> pd.DataFrame:
    def fmt(x: Any) -> Any:
        return "-" if x is None else round(x, 4) if isinstance(x, float) else x

    row = {
        "strategy": summary["strategy"],
        "clients": f"{summary['clients_per_round']}/{summary['num_clients']}",
        "rounds": summary["rounds"],
        "personal acc": fmt(summary["personal_acc"]),
        "global acc": fmt(summary["global_acc"]),
        "backbone forwards": fmt(summary["backbone_forwards"]),
        "failures": summary["failures"],
        "wall s": fmt(summary["wall_seconds"]),
    }
    return pd.DataFrame([row])
