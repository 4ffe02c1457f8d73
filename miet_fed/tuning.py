"""`miet-fed tune`: edge tuning on one device, the paper's own setting.

The cloud computes (or loads from cache) the gathered payload of every selected image once; the
device then trains its edge network on the payloads for the configured epochs.

The VTAB-1K protocol: data.n_val of the data.n_train selected images are held out for
validation (200 of 1000); after every epoch the network is evaluated on them, the parameters of
the epoch with the best validation accuracy (on a tie, the lower validation loss, then the
earlier epoch) are kept, training may stop early (train.patience), and the test images are
evaluated once, on the kept parameters. The test accuracy never chooses anything;
train.test_curve=true also records it per epoch, as a diagnostic. Without validation
(data.n_val=0) the last epoch is kept.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import numpy as np
import pandas as pd
import torch

from miet_fed.cloud.gather import get_gather
from miet_fed.cloud.service import FeatureService
from miet_fed.cloud.tasks import TaskFeatures
from miet_fed.comm.cost import check_dtype, raw_image_bytes
from miet_fed.config import TaskConfig, TuneConfig, to_toml
from miet_fed.config.data import dataset_stem
from miet_fed.data import Split, load_dataset, vtab_split
from miet_fed.edge.networks import build_edge_network, check_pair
from miet_fed.edge.train import Optim, evaluate, fit
from miet_fed.logging_hooks import check_tensorboard, open_hooks
from miet_fed.results import (
    atomic_dir,
    check_replaceable,
    run_identity,
    run_path,
    setting_fields,
    slug,
    write_json,
)


def default_name(cfg: TuneConfig) -> str:
    m = cfg.model
    data = dataset_stem(cfg.data.dataset)
    return slug(
        "tune",
        f"{len(cfg.data.tasks)}tasks" if cfg.data.tasks else data,
        m.gather,
        f"k{m.k}",
        m.dtype,
        cfg.edge.name,
        f"s{cfg.run.seed}",
        run_identity("tune", cfg)[:8],  # every other setting that changes the results
    )


def check_names(cfg: TuneConfig) -> None:
    """Every registered name is checked before any data is loaded or backbone built."""
    gather = get_gather(cfg.model.gather)
    check_dtype(cfg.model.dtype)
    check_pair(cfg.edge.name, gather.kind)
    check_tensorboard(cfg.run.tensorboard)


def split_of(cfg: TuneConfig, labels: np.ndarray, task: TaskConfig | None = None) -> Split:
    """The run's (or a task's) train/val/test selection (val out of the selected n_train)."""
    d = task or cfg.data
    return vtab_split(labels, d.n_train, d.n_test or None, cfg.run.seed, cfg.data.n_val)


def plan_check(cfg: TuneConfig) -> None:
    """Every check `run_tune` makes before its first forward (a sweep's planning runs it):
    registered names, the train/val/test selection against the dataset, the depth k."""
    from miet_fed.cloud.service import payload_info

    check_names(cfg)
    for task in cfg.data.task_list:
        split_of(cfg, load_dataset(task.dataset).labels, task)
    payload_info(cfg.model)


class BestEpoch:
    """The parameters of the epoch with the best validation accuracy, and how many epochs have
    gone by since without a better one (for early stopping). On a tie the lower validation loss
    wins: small validation sets saturate (1.0 by epoch 2 on the tests' tiny data), and keeping
    the earliest such epoch kept a network with 28 times the final test loss."""

    def __init__(self) -> None:
        self.epoch, self.acc, self.loss, self.stale = 0, -math.inf, math.nan, 0
        self.state: dict[str, torch.Tensor] | None = None

    def update(self, net: torch.nn.Module, epoch: int, loss: float, acc: float) -> None:
        if acc > self.acc or (acc == self.acc and loss < self.loss):  # else the earlier stays
            self.epoch, self.acc, self.loss, self.stale = epoch, acc, loss, 0
            self.state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        else:
            self.stale += 1

    def restore(self, net: torch.nn.Module) -> None:
        if self.state is not None:
            net.load_state_dict(self.state)


def run_tune(cfg: TuneConfig) -> dict[str, Any]:
    """Run the job, write `results/<run>/` atomically, return the summary. With
    `[[data.tasks]]`, one device tunes one edge network per task on one backbone (the paper's
    one-device, many-task table): each task's log under `tasks/<name>/`, metrics.csv with a
    task column, and the summary's `per_task` (test_acc etc. averaged over tasks at the top)."""
    t0 = time.perf_counter()
    check_names(cfg)
    out = run_path(cfg.run.out, default_name(cfg))
    identity, overwrite = run_identity("tune", cfg), cfg.run.overwrite
    check_replaceable(out, identity, overwrite)  # before any work, not after it
    tasks = cfg.data.task_list
    datasets = [load_dataset(task.dataset) for task in tasks]
    # one backbone for every task (and one service for two tasks on one dataset)
    features = TaskFeatures(cfg.model, datasets, progress=cfg.run.progress)
    jobs = [
        (task, ds, split_of(cfg, ds.labels, task), service)
        for task, ds, service in zip(tasks, datasets, features.services, strict=True)
    ]
    for _, _, split, service in jobs:
        service.ensure(np.concatenate([split.train, split.val, split.test]))
    with atomic_dir(out, identity, overwrite) as tmp:  # held from here: the log is written live
        results = []
        for task, ds, split, service in jobs:
            folder = tmp / "tasks" / task.label if cfg.data.tasks else tmp
            folder.mkdir(parents=True, exist_ok=True)
            results.append(_tune_task(cfg, ds, split, service, folder))
        (tmp / "config.toml").write_text(to_toml(cfg))
        if not cfg.data.tasks:
            ((rows, summary),) = results
        else:
            rows, summary = _task_summary(cfg, jobs, results)
        summary |= {**features.stats(), "wall_seconds": round(time.perf_counter() - t0, 3)}
        pd.DataFrame(rows).reindex(columns=_columns(cfg, rows)).to_csv(
            tmp / "metrics.csv", index=False
        )
        write_json(tmp / "summary.json", summary)
    summary["out"] = str(out)
    return summary


def _tune_task(
    cfg: TuneConfig, ds: Any, split: Split, service: FeatureService, folder: Any
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One task's tuning on its cached payloads: its epoch rows and summary fields."""
    data = {
        part: (service.features(idx), torch.from_numpy(ds.labels[idx]).long())
        for part, idx in (("train", split.train), ("val", split.val), ("test", split.test))
        if len(idx)
    }
    has_val, patience, test_curve = "val" in data, cfg.train.patience, cfg.train.test_curve

    torch.manual_seed(cfg.run.seed)
    net = build_edge_network(
        cfg.edge.name, service.payload_kind, service.payload_shape, ds.num_classes, cfg.edge
    )
    rows: list[dict[str, Any]] = []
    best = BestEpoch()
    hooks = open_hooks(folder, cfg.train.epochs, tensorboard=cfg.run.tensorboard, unit="epoch")
    t_train = time.perf_counter()

    def on_epoch(epoch: int, loss: float, acc: float) -> bool:
        """Log the epoch (validation, and test only as the asked-for diagnostic); True
        stops training: `patience` epochs without a better validation accuracy."""
        scalars = {"train_loss": loss, "train_acc": acc}
        if has_val:
            scalars["val_loss"], scalars["val_acc"] = evaluate(net, *data["val"])
            best.update(net, epoch + 1, scalars["val_loss"], scalars["val_acc"])
        if test_curve:
            scalars["test_loss"], scalars["test_acc"] = evaluate(net, *data["test"])
        net.train()
        line = hooks.round(epoch + 1, scalars)
        if cfg.run.progress:
            print(line, file=sys.stderr, flush=True)
        seconds = round(time.perf_counter() - t_train, 3)
        val = {k: scalars.get(k, math.nan) for k in ("val_loss", "val_acc")}
        rows.append({"epoch": epoch + 1, **scalars, **val, "seconds": seconds})
        return bool(patience) and best.stale >= patience

    with hooks:
        gen = torch.Generator().manual_seed(cfg.run.seed)
        optim = Optim(cfg.train.epochs, cfg.train.batch_size, cfg.train.lr, cfg.train.weight_decay)
        fit(net, *data["train"], optim, gen, on_epoch=on_epoch)
        train_seconds = time.perf_counter() - t_train
        epochs_run = len(rows)
        if epochs_run < cfg.train.epochs:
            hooks.text(
                f"early stop after epoch {epochs_run}: no better val_acc in {patience} epochs"
            )
        if has_val:
            best.restore(net)  # the selected epoch's parameters, tested once below
            kept = f"epoch {best.epoch} (best val_acc {best.acc:.4f})"
        else:
            kept = f"last epoch {epochs_run} (no validation: data.n_val=0)"
        test_loss, test_acc = evaluate(net, *data["test"])
        hooks.text(f"final: {kept}, test_acc {test_acc:.4f}, test_loss {test_loss:.4f}")

    h, w = ds.images.shape[1:3]
    channels = 1 if ds.images.ndim == 3 else ds.images.shape[3]
    summary = {
        "command": "tune",
        "dataset": cfg.data.dataset,
        "n_train": len(split.train),  # the images trained on: data.n_train minus n_val
        "n_val": len(split.val),
        "n_test": len(split.test),
        **setting_fields(cfg),
        "test_acc": test_acc,  # of the kept epoch, evaluated once
        "test_loss": test_loss,
        "val_acc": best.acc if has_val else None,
        "val_loss": best.loss if has_val else None,
        "best_epoch": best.epoch if has_val else epochs_run,
        "epochs_run": epochs_run,
        "bytes_per_image": service.bytes_per_image,
        "raw_image_bytes": raw_image_bytes(h, w, channels),
        "payload_shape": list(service.payload_shape),
        "trainable_params": net.trainable_parameters(),
        "train_seconds": round(train_seconds, 3),
    }
    return rows, summary


def _task_summary(
    cfg: TuneConfig, jobs: list[tuple[Any, ...]], results: list[tuple[list, dict]]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A multi-task tune: rows with a task column; per_task, and the tasks' mean at the top."""
    rows, per_task = [], {}
    for (task, *_), (task_rows, fields) in zip(jobs, results, strict=True):
        rows += [{"task": task.label, **r} for r in task_rows]
        keep = ("n_train", "n_val", "n_test", "test_acc", "test_loss", "val_acc", "best_epoch")
        per_task[task.label] = {"dataset": task.dataset, **{k: fields[k] for k in keep}}
        per_task[task.label]["trainable_params"] = fields["trainable_params"]

    def mean(key: str) -> float | None:
        values = [v[key] for v in per_task.values() if v[key] is not None]
        return float(np.mean(values)) if values else None

    first = results[0][1]
    summary = {
        "command": "tune",
        "dataset": "+".join(t.dataset for t in cfg.data.tasks),
        "tasks": list(per_task),
        **setting_fields(cfg),
        "test_acc": mean("test_acc"),  # each task counted once
        "test_loss": mean("test_loss"),
        "val_acc": mean("val_acc"),
        "per_task": per_task,
        "bytes_per_image": first["bytes_per_image"],
        "payload_shape": first["payload_shape"],
        "trainable_params": sum(v["trainable_params"] for v in per_task.values()),
        "train_seconds": round(sum(r[1]["train_seconds"] for r in results), 3),
    }
    return rows, summary


def _columns(cfg: TuneConfig, rows: list[dict[str, Any]]) -> list[str]:
    """metrics.csv's columns: validation always (empty without it), test only as asked, the
    task first with tasks."""
    test = ["test_loss", "test_acc"] if cfg.train.test_curve else []
    task = ["task"] if cfg.data.tasks else []
    return [*task, "epoch", "train_loss", "train_acc", "val_loss", "val_acc", *test, "seconds"]


def summary_table(summary: dict[str, Any]) -> pd.DataFrame:
    """The few numbers a reader compares across runs, as a one-row table."""
    cols = {
        "test_acc": "test acc",
        "val_acc": "val acc",
        "best_epoch": "epoch",
        "bytes_per_image": "bytes/image",
        "trainable_params": "trainable params",
        "backbone_forwards": "backbone forwards",
        "wall_seconds": "wall s",
    }
    row = {"gather": f"{summary['gather']} k={summary['k']}", "edge": summary["edge"]}
    row.update({label: summary.get(key) for key, label in cols.items()})
    return pd.DataFrame([row])
