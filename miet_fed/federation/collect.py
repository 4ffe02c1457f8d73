"""Turn the server's per-reply rows into the run's tables: clients, rounds, ledger, summary."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from miet_fed.comm import cost
from miet_fed.comm import ledger as ledger_mod
from miet_fed.comm.link import client_links, round_seconds
from miet_fed.edge.networks import param_counts
from miet_fed.errors import MietError
from miet_fed.federation.payload_plan import base_format, feature_bytes_by_format
from miet_fed.federation.spec import RunSpec
from miet_fed.federation.strategies import get_strategy
from miet_fed.federation.tasks import task_of_devices
from miet_fed.results import setting_fields, write_json

ROWS = "rows.jsonl"
BYTE_FIELDS = [*ledger_mod.FIELDS, *ledger_mod.WIRE.values()]


def _phase(ok: pd.DataFrame, phase: str) -> pd.DataFrame:
    return ok[ok.phase == phase].drop(columns=["phase"]).dropna(axis=1, how="all")


def _clients_table(ok: pd.DataFrame) -> pd.DataFrame:
    """One row per round and client: training and personal evaluation side by side."""
    train = _phase(ok, "train").rename(columns={"num-examples": "n_train"})
    evals = _phase(ok, "evaluate").rename(columns={"num-examples": "n_test"})
    evals = evals.drop(columns=[c for c in BYTE_FIELDS if c in evals])  # bytes: see ledger.csv
    evals = evals.rename(columns={"seconds": "eval_seconds", "node": "eval_node"})
    keys = ["round", "client"]
    table = pd.merge(train, evals, on=keys, how="outer") if len(evals) else train
    for col in ("client", "n_train", "n_test"):
        if col in table:
            table[col] = table[col].astype("Int64")
    return table.sort_values(keys).reset_index(drop=True)


def _target_reached(per_round: pd.DataFrame, col: str, frac: float = 0.95) -> dict[str, Any]:
    """Bytes and link seconds until `col` first reaches frac x its best value."""
    if col not in per_round:
        return {}
    series = per_round.dropna(subset=[col])
    series = series[series["round"] >= 1]
    if series.empty:
        return {}
    target = frac * series[col].max()
    hit = series[series[col] >= target].iloc[0]
    return {
        f"{col}_target": round(float(target), 4),
        f"bytes_to_{col}_target": int(hit["bytes_cum"]),
        f"comm_seconds_to_{col}_target": round(float(hit["comm_seconds_cum"]), 3),
    }


def collect(spec: RunSpec, folder: Path, timings: dict[str, float]) -> dict[str, Any]:
    """rows.jsonl -> clients.csv, rounds.csv, ledger.csv, failures.csv, summary.json."""
    rows_path = folder / ROWS
    if not rows_path.exists():
        raise MietError("the simulation produced no results (the server app failed); see the log")
    rows = pd.read_json(rows_path, lines=True)
    rows_path.unlink()
    shutil.rmtree(
        folder / "devices", ignore_errors=True
    )  # device store of a run without checkpoint
    cfg = spec.config
    failed = rows[rows["error"].notna()] if "error" in rows else rows.iloc[:0]
    ok = rows.drop(index=failed.index)
    if len(failed):
        failed.dropna(axis=1, how="all").to_csv(folder / "failures.csv", index=False)

    clients = _clients_table(ok)
    if spec.tasks:
        names = [t.name for t in spec.tasks]
        tasks = task_of_devices(spec.tasks, clients["client"].to_numpy(dtype=np.int64))
        clients.insert(2, "task", [names[t] for t in tasks])
    clients.to_csv(folder / "clients.csv", index=False)

    replies = ok[ok.phase.isin(["train", "evaluate"])]
    ledger = ledger_mod.build_ledger(replies)
    ledger.to_csv(folder / "ledger.csv", index=False)

    # The cost model, from the configuration and who took part.
    strategy = get_strategy(cfg.fed.strategy)
    model, shared = _model_bytes(spec, replies, strategy.share)
    measured = ledger_mod.totals(ledger)

    # Per round: learning, bytes and link time.
    agg: dict[str, tuple[str, str]] = {
        "clients_trained": ("train_acc", "count"),
        "train_loss": ("train_loss", "mean"),
    }
    if "personal_val_acc" in clients:  # fed.val_fraction: every round on validation
        agg |= {
            "clients_evaluated": ("personal_val_acc", "count"),
            "personal_val_acc": ("personal_val_acc", "mean"),
            "personal_val_acc_std": ("personal_val_acc", "std"),
        }
    if "personal_acc" in clients:
        if "personal_val_acc" not in clients:
            agg["clients_evaluated"] = ("personal_acc", "count")
        agg |= {
            "personal_acc": ("personal_acc", "mean"),
            "personal_acc_std": ("personal_acc", "std"),
        }
    per_round = clients.groupby("round").agg(**agg)
    server = _phase(ok, "server")
    if "global_acc" in server:
        accs = [c for c in server if c.startswith(("global_acc", "global_val_acc"))]
        per_round = per_round.join(server.set_index("round")[accs], how="outer")
    if "elapsed_seconds" in server:  # wall time since the server started, at each round's end
        per_round = per_round.join(server.set_index("round")[["elapsed_seconds"]], how="outer")
    per_round = per_round.reindex(range(0 if "global_acc" in server else 1, cfg.fed.rounds + 1))
    per_round.index.name = "round"
    by_dir = ledger.pivot_table(
        index="round", columns="direction", values="bytes", aggfunc="sum", fill_value=0
    )
    per_round["bytes_up"] = by_dir.get("up", pd.Series(dtype="int64"))
    per_round["bytes_down"] = by_dir.get("down", pd.Series(dtype="int64"))
    per_round[["bytes_up", "bytes_down"]] = per_round[["bytes_up", "bytes_down"]].fillna(0)
    per_round["bytes_cum"] = (per_round.bytes_up + per_round.bytes_down).cumsum().astype("int64")
    link = cfg.link
    links = client_links(
        cfg.fed.num_clients, link.up_mbps, link.down_mbps, link.spread, cfg.run.seed
    )
    per_round["comm_seconds"] = round_seconds(ledger, links, link.latency_ms)
    per_round["comm_seconds"] = per_round["comm_seconds"].fillna(0.0)
    per_round["comm_seconds_cum"] = per_round["comm_seconds"].cumsum()
    fails = failed.groupby("round").size() if len(failed) else pd.Series(dtype=int)
    per_round["failures"] = fails.reindex(per_round.index).fillna(0).astype(int)
    per_round = per_round.reset_index()
    per_round.to_csv(folder / "rounds.csv", index=False)

    stats_path = folder / "backbone_stats.json"
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    last = per_round[per_round["round"] == cfg.fed.rounds]
    final = clients[clients["round"] == cfg.fed.rounds]

    def value(col: str) -> float | None:
        if col not in last or last[col].isna().all():
            return None
        return float(last[col].iloc[0])

    weighted = None
    if "personal_acc" in final and final.personal_acc.notna().any():
        done = final.dropna(subset=["personal_acc"])
        weighted = float(np.average(done.personal_acc, weights=done.n_test))
    all_ids = np.concatenate(
        [*spec.clients_train, *spec.clients_val, *spec.clients_test, spec.global_test]
    )
    summary: dict[str, Any] = {
        "command": "simulate",
        "dataset": "+".join(t.dataset for t in spec.tasks) or cfg.data.dataset,
        "strategy": cfg.fed.strategy,
        "shared": strategy.share,
        "num_clients": cfg.fed.num_clients,
        "clients_per_round": cfg.fed.sampled,
        "rounds": cfg.fed.rounds,
        "partition": cfg.fed.partition,
        "alpha": cfg.fed.alpha,
        **setting_fields(cfg),
        "personal_acc": value("personal_acc"),
        "personal_acc_weighted": weighted,
        "global_acc": value("global_acc"),
        **_validation(spec, value),
        **_per_task(spec, final, value),
        "failures": int(len(failed)),
        "pool_images": int(sum(spec.held(c) for c in range(len(spec.clients_train)))),
        "unique_images": int(len(np.unique(all_ids))),
        "backbone_forwards": stats.get("backbone_forwards"),
        "backbone_builds": stats.get("backbone_builds"),
        "basis_fits": stats.get("basis_fits"),
        "features_computed": int(timings.get("features_computed", 0)),
        "resumed_after_round": int(timings.get("resumed_after_round", 0)),
        "cache_hits": stats.get("cache_hits"),
        "bytes_served": stats.get("bytes_served"),
        "features_via_actor": stats.get("via_actor"),
        "feature_bytes_per_image": spec.feature_bytes,
        **_plan_fields(cfg, spec, feature_bytes_by_format(cfg, spec.formats)),
        "image_bytes": spec.image_bytes,
        "shared_params": shared,
        "total_bytes": int(ledger["bytes"].sum()),
        "total_wire_bytes": int(ledger["wire_bytes"].sum()),
        "bytes_by_kind": measured,
        "model_bytes_by_kind": model,
        "ledger_equals_model": all(measured[k] == v for k, v in model.items()),
        "total_comm_seconds": round(float(per_round["comm_seconds"].sum()), 3),
        **_target_reached(per_round, "personal_acc"),
        **_target_reached(per_round, "global_acc"),
        **{k: round(v, 3) for k, v in timings.items() if k.endswith("seconds")},
    }
    write_json(folder / "summary.json", summary)
    return summary


def _model_bytes(spec: RunSpec, replies: pd.DataFrame, share: str) -> tuple[dict[str, int], int]:
    """What the ledger must hold (`ledger.model_bytes`), summed over tasks (each with its own
    images' size and its own head), and the shared parameters of a (the first task's) device."""
    cfg = spec.config
    per_image = feature_bytes_by_format(cfg, spec.formats)  # one entry without a plan
    clients = replies["client"].dropna().astype(int)
    task_of = task_of_devices(spec.tasks, clients.to_numpy())
    contacted = clients.unique()
    contacted_task = task_of_devices(spec.tasks, contacted)
    total: dict[str, int] = {}
    shared_of = [
        cost.shared_params(
            param_counts(
                cfg.edge.name, spec.payload_kind, spec.payload_shape, spec.classes_of(t), cfg.edge
            ),
            share,
        )
        for t in range(max(1, len(spec.tasks)))
    ]
    for t, shared in enumerate(shared_of):
        mine = contacted[contacted_task == t]
        sizes = [spec.held(c) for c in mine]
        phases = replies.phase[task_of == t]
        part = ledger_mod.model_bytes(
            spec.tasks[t].image_bytes if spec.tasks else spec.image_bytes,
            spec.feature_bytes,
            int(sum(sizes)),
            shared,
            int((phases == "train").sum()),
            int((phases == "evaluate").sum()),
            feature_total=sum(
                n * per_image[spec.format_of(c)] for n, c in zip(sizes, mine, strict=True)
            ),
        )
        total = {k: total.get(k, 0) + v for k, v in part.items()}
    return total, shared_of[0]


def _validation(spec: RunSpec, value: Any) -> dict[str, Any]:
    """With fed.val_fraction: the last round's accuracies on the validation images (the test
    accuracies above were computed once, after the last round)."""
    if not spec.clients_val:
        return {}
    return {
        "validation": True,
        "personal_val_acc": value("personal_val_acc"),
        "global_val_acc": value("global_val_acc"),
    }


def _per_task(spec: RunSpec, final: pd.DataFrame, value: Any) -> dict[str, Any]:
    """A multi-task run's accuracies per task (`per_task`) and averaged over tasks."""
    if not spec.tasks:
        return {}
    per_task: dict[str, dict[str, Any]] = {}
    for task in spec.tasks:
        mine = final[final["task"] == task.name] if "task" in final else final.iloc[:0]
        done = mine.dropna(subset=["personal_acc"]) if "personal_acc" in mine else mine.iloc[:0]
        per_task[task.name] = {
            "dataset": task.dataset,
            "devices": task.num_devices,
            "classes": task.num_classes,
            "personal_acc": float(done.personal_acc.mean()) if len(done) else None,
            "personal_acc_weighted": (
                float(np.average(done.personal_acc, weights=done.n_test)) if len(done) else None
            ),
            "global_acc": value(f"global_acc[{task.name}]"),
        }
    accs = [v["personal_acc"] for v in per_task.values() if v["personal_acc"] is not None]
    return {
        "tasks": [t.name for t in spec.tasks],
        "per_task": per_task,
        "personal_acc_task_mean": float(np.mean(accs)) if accs else None,
    }


def _plan_fields(cfg: Any, spec: RunSpec, per_image: dict[str, int]) -> dict[str, Any]:
    """With a payload plan: how many devices got each format (the cached one by its name)."""
    if not spec.formats:
        return {}
    base = base_format(cfg)
    counts = pd.Series([f or base for f in spec.formats]).value_counts().sort_index()
    return {
        "plan_formats": {str(k): int(v) for k, v in counts.items()},
        "plan_bytes_per_image": {(k or base): v for k, v in per_image.items()},
    }
