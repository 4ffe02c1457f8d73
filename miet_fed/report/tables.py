"""Report tables: byte accounting (ledger first, recorded fields as a fallback), markdown
cells, run labels, and the cost tables. No plotting here."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from miet_fed.errors import MietError
from miet_fed.jobs import JOBS, Job
from miet_fed.markdown import table

if TYPE_CHECKING:
    from miet_fed.report.document import Report

LEDGER = "ledger"


SOURCE_TEXT = {LEDGER: "communication ledger: images, features, parameters, metrics"}


def _num(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def total_bytes(summary: dict[str, Any], rounds: pd.DataFrame | None) -> tuple[float | None, str]:
    """(bytes, where they come from) for one run: the ledger if present, else a fallback."""
    if _num(summary.get("total_bytes")) is not None:
        return float(summary["total_bytes"]), LEDGER
    if rounds is not None and "bytes_cum" in rounds and rounds["bytes_cum"].notna().any():
        return float(rounds["bytes_cum"].max()), LEDGER
    kind = JOBS.get(summary.get("command"))
    if kind is not None and kind.federated:
        params = 0.0
        if rounds is not None:
            for col in ("params_up_bytes", "params_down_bytes"):
                if col in rounds:
                    params += float(pd.to_numeric(rounds[col], errors="coerce").fillna(0).sum())
        served = _num(summary.get("bytes_served"))
        if served is None:
            return params, "parameters only (no ledger)"
        return params + served, "parameters + features served (no ledger)"
    per_image, raw = _num(summary.get("bytes_per_image")), _num(summary.get("raw_image_bytes"))
    n = sum(_num(summary.get(k)) or 0 for k in ("n_train", "n_val", "n_test"))
    if per_image is None or not n:
        return None, "unknown"
    return (per_image + (raw or 0)) * n, "images up + features down once per image (no ledger)"


def round_bytes(rounds: pd.DataFrame) -> tuple[pd.DataFrame, str] | None:
    """Per-round uplink/downlink bytes (round, up, down, cum) and their source, or None."""
    if {"bytes_up", "bytes_down"} <= set(rounds.columns):
        up, down, source = rounds["bytes_up"], rounds["bytes_down"], "ledger: all kinds"
    elif {"params_up_bytes", "params_down_bytes"} <= set(rounds.columns):
        up, down = rounds["params_up_bytes"], rounds["params_down_bytes"]
        source = "parameters only (no ledger)"
    else:
        return None
    df = pd.DataFrame(
        {
            "round": rounds["round"],
            "up": pd.to_numeric(up, errors="coerce").fillna(0),
            "down": pd.to_numeric(down, errors="coerce").fillna(0),
        }
    )
    df["cum"] = rounds["bytes_cum"] if "bytes_cum" in rounds else (df["up"] + df["down"]).cumsum()
    return df, source


def _cell(col: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}" if abs(value) >= 10000 else str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if "acc" in col and "bytes" not in col and 0 <= v <= 1:
            return f"{100 * v:.1f} %"
        if v.is_integer() and abs(v) >= 1:
            return f"{int(v):,}" if abs(v) >= 10000 else str(int(v))
        return f"{v:.4g}"
    return str(value)  # escaped by markdown.table


def md_table(df: pd.DataFrame) -> str:
    """A GitHub markdown table; accuracies as percentages, big integers with separators."""
    if df.empty:
        return "(empty)\n"
    cols = list(df.columns)
    rows = (
        [_cell(c, v) for c, v in zip(cols, row, strict=True)] for row in df.itertuples(index=False)
    )
    return table(cols, rows) + "\n"


def _unique(values: pd.Series) -> list[Any]:
    return list(dict.fromkeys(values.dropna().tolist()))


def _read_csv(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.is_file() and path.stat().st_size > 1 else None


def _flat(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in summary.items()}


def _color_key(summary: pd.DataFrame, kind: Job) -> str | None:
    """What to color runs by: the strategy or gather that varies, else the first varied key."""
    order = kind.color_order
    for col in order:
        if col in summary and summary[col].nunique() > 1:
            return col
    grid = [c for c in summary.columns if "." in c and summary[c].nunique() > 1]
    if grid:
        return grid[0]
    return next((c for c in order if c in summary), None)


def _short(col: str) -> str:
    """`fed.num_clients` -> `num_clients`; `edge.name` -> `edge` (as the sweep's folder names)."""
    if "." not in col:
        return col
    section, key = col.split(".", 1)
    return section if key == "name" else key


def _run_labels(summary: pd.DataFrame, color: str | None, compact: bool = False) -> pd.Series:
    """Per-run label from the varied grid values, without the one the color already shows.

    `compact` (annotations next to points) names only the values that differ from the most
    common one, so e.g. `dtype=int8` marks the one int8 run instead of repeating `k=12 ...`.
    """
    same = {color, f"fed.{color}", f"model.{color}"} if color else set()
    cols = [c for c in summary.columns if "." in c and c not in same and summary[c].nunique() > 1]
    if not cols:
        return summary["run"].astype(str)
    modes = {c: summary[c].mode().iloc[0] for c in cols}

    def label(row: pd.Series) -> str:
        items = [(c, v) for c, v in zip(cols, row, strict=True)]
        if compact:
            items = [(c, v) for c, v in items if v != modes[c]] or items
        return " ".join(f"{_short(c)}={v}" for c, v in items)

    return summary[cols].apply(label, axis=1)


SEED = "run.seed"


def over_seeds(summary: pd.DataFrame, metrics: list[str]) -> pd.DataFrame | None:
    """Mean, sample standard deviation (ddof=1) and count over seeds of each metric, one row
    per setting (the other varied grid keys), in the sweep's order; None unless several seeds
    ran. A reader compares settings by their spread over seeds, not by one seed's number."""
    if SEED not in summary or summary[SEED].nunique() < 2:
        return None
    keys = [c for c in summary.columns if "." in c and c != SEED and summary[c].nunique() > 1]
    metrics = [m for m in metrics if m in summary and summary[m].notna().any()]
    if not metrics:
        return None
    df = summary.assign(**{m: pd.to_numeric(summary[m], errors="coerce") for m in metrics})
    if not keys:
        df, keys = df.assign(_setting=0), ["_setting"]
    stats = {"seeds": (SEED, "nunique")}
    for m in metrics:
        stats |= {f"{m} mean": (m, "mean"), f"{m} std": (m, "std")}
    out = df.groupby(keys, sort=False, dropna=False).agg(**stats).reset_index()
    return out.drop(columns=["_setting"], errors="ignore")


def _pareto(x: pd.Series, y: pd.Series) -> pd.Series:
    """True for runs no other run beats on both fewer bytes and higher accuracy."""
    flags = pd.Series(False, index=x.index)
    best = -math.inf
    for i in sorted(x.dropna().index, key=lambda i: (x[i], -y[i])):
        if pd.notna(y[i]) and y[i] > best:
            flags[i], best = True, y[i]
    return flags


def _ledger_pivot(ledger: pd.DataFrame, run: str) -> pd.DataFrame:
    cols = [c for c in ("direction", "kind") if c in ledger]
    if not cols or "bytes" not in ledger:
        return pd.DataFrame({"run": [run], "bytes": [ledger.get("bytes", pd.Series()).sum()]})
    sums = ledger.groupby(cols)["bytes"].sum()
    row = {
        "run": run,
        **{"_".join(map(str, k)) if isinstance(k, tuple) else str(k): v for k, v in sums.items()},
    }
    row["total"] = float(ledger["bytes"].sum())
    return pd.DataFrame([row])


def _order_kinds(df: pd.DataFrame) -> pd.DataFrame:
    """run, downlink kinds, uplink kinds, total: the same column order for every run set."""
    middle = sorted(c for c in df.columns if c not in ("run", "total"))
    return df[["run", *middle, *(["total"] if "total" in df else [])]]


def _tune_cost(rep: Report, ok: pd.DataFrame) -> None:
    """(d) bytes per image as measured, next to what `miet_fed.comm.cost` predicts."""
    from miet_fed.comm.cost import encoded_bytes

    rows = []
    for _, r in ok.iterrows():
        predicted = None
        try:
            shape = tuple(json.loads(r["payload_shape"]))
            predicted = encoded_bytes(shape, str(r["dtype"]))
        except (KeyError, TypeError, ValueError, MietError):
            pass
        rows.append(
            {
                "run": r["run"],
                "gather": r.get("gather"),
                "k": r.get("k"),
                "dtype": r.get("dtype"),
                "edge": r.get("edge"),
                "payload_shape": r.get("payload_shape"),
                "bytes_per_image": r.get("bytes_per_image"),
                "predicted_bytes_per_image": predicted,
                "raw_image_bytes": r.get("raw_image_bytes"),
                "trainable_params": r.get("trainable_params"),
                "total_bytes": r.get("total_bytes"),
                "bytes_source": r.get("bytes_source"),
            }
        )
    rep.table(
        pd.DataFrame(rows),
        "cost_per_image.csv",
        "Cost per image",
        "Downlink bytes per image as measured by the run, and as predicted by "
        "`miet_fed.comm.cost.encoded_bytes` from the payload shape and dtype.",
    )


def _sim_cost(rep: Report, ok: pd.DataFrame, src: Path) -> None:
    """(d) simulate: bytes by kind from each run's ledger.csv, else the recorded byte fields."""
    frames = []
    for run in ok["run"]:
        ledger = _read_csv(src / "runs" / str(run) / "ledger.csv")
        if ledger is not None:
            frames.append(_ledger_pivot(ledger, str(run)))
    if frames:
        rep.table(
            _order_kinds(pd.concat(frames, ignore_index=True)),
            "cost_by_kind.csv",
            "Bytes by direction and kind (from each run's ledger.csv)",
        )
        return
    cols = [
        c
        for c in (
            "run",
            "strategy",
            "num_clients",
            "clients_per_round",
            "rounds",
            "bytes_served",
            "total_bytes",
            "bytes_source",
        )
        if c in ok
    ]
    rep.table(
        ok[cols],
        "cost_per_run.csv",
        "Communication per run",
        "No ledger.csv in these runs: totals are the recorded parameter bytes plus the "
        "feature bytes the backbone actor served.",
    )
