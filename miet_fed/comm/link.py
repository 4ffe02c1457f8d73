"""Link model (beyond the paper): how long a round's transfers take on real device links.

Each client gets an uplink and a downlink bandwidth and a latency (optionally spread across
clients by a seeded log-normal factor). A client's communication time in a round is its latency
per message plus its bytes over its bandwidth; clients transfer in parallel, so the round waits
for the slowest participant. Pure numpy/pandas.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def client_links(
    num_clients: int, up_mbps: float, down_mbps: float, spread: float, seed: int
) -> pd.DataFrame:
    """Per-client bandwidths in bits/s; `spread` is the log-normal sigma (0 = identical links)."""
    rng = np.random.default_rng([seed, 7919])
    factor = rng.lognormal(0.0, spread, size=num_clients) if spread > 0 else np.ones(num_clients)
    return pd.DataFrame(
        {
            "client": np.arange(num_clients),
            "up_bps": up_mbps * 1e6 * factor,
            "down_bps": down_mbps * 1e6 * factor,
        }
    )


def round_seconds(ledger: pd.DataFrame, links: pd.DataFrame, latency_ms: float) -> pd.Series:
    """Communication seconds per round: the slowest participating client of each round."""
    if ledger.empty:
        return pd.Series(dtype=float, name="comm_seconds")
    per = ledger.pivot_table(
        index=["round", "client"], columns="direction", values="bytes", aggfunc="sum", fill_value=0
    )
    phases = ledger.groupby(["round", "client"])["phase"].nunique()
    per = per.join(phases.rename("messages")).reset_index().merge(links, on="client")
    up = per.get("up", 0.0)
    down = per.get("down", 0.0)
    # one request down and one reply up per phase the client took part in
    per["seconds"] = (
        2 * per["messages"] * latency_ms / 1000.0
        + 8.0 * down / per["down_bps"]
        + 8.0 * up / per["up_bps"]
    )
    return per.groupby("round")["seconds"].max().rename("comm_seconds")
