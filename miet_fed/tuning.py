"""`miet-fed tune`: edge tuning on one device, the paper's own setting.

The cloud computes (or loads from cache) the gathered payload of every selected image once; the
device then trains its edge network on the payloads for the configured epochs.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
import pandas as pd
import torch

from miet_fed.cloud.gather import get_gather
from miet_fed.cloud.service import FeatureService
from miet_fed.comm.cost import check_dtype, raw_image_bytes
from miet_fed.config import TuneConfig, to_toml
from miet_fed.data import load_dataset, vtab_split
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
    return slug(
        "tune",
        cfg.data.dataset.split(":")[-1].rstrip("/").split("/")[-1],
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


def plan_check(cfg: TuneConfig) -> None:
    """Every check `run_tune` makes before its first forward (a sweep's planning runs it):
    registered names, the selection against the dataset, the depth k."""
    from miet_fed.cloud.service import payload_info

    check_names(cfg)
    ds = load_dataset(cfg.data.dataset)
    vtab_split(ds.labels, cfg.data.n_train, cfg.data.n_test or None, cfg.run.seed)
    payload_info(cfg.model)


def run_tune(cfg: TuneConfig) -> dict[str, Any]:
    """Run the job, write `results/<run>/` atomically, return the summary."""
    t0 = time.perf_counter()
    check_names(cfg)
    out = run_path(cfg.run.out, default_name(cfg))
    identity, overwrite = run_identity("tune", cfg), cfg.run.overwrite
    check_replaceable(out, identity, overwrite)  # before any work, not after it
    ds = load_dataset(cfg.data.dataset)
    split = vtab_split(ds.labels, cfg.data.n_train, cfg.data.n_test or None, cfg.run.seed)
    service = FeatureService(cfg.model, ds.images, ds.fingerprint, progress=cfg.run.progress)
    service.ensure(np.concatenate([split.train, split.test]))
    x_train, x_test = service.features(split.train), service.features(split.test)
    y_train = torch.from_numpy(ds.labels[split.train]).long()
    y_test = torch.from_numpy(ds.labels[split.test]).long()

    torch.manual_seed(cfg.run.seed)
    net = build_edge_network(
        cfg.edge.name, service.payload_kind, service.payload_shape, ds.num_classes, cfg.edge
    )
    rows: list[dict[str, Any]] = []
    with atomic_dir(out, identity, overwrite) as tmp:  # held from here: the log is written live
        hooks = open_hooks(tmp, cfg.train.epochs, tensorboard=cfg.run.tensorboard, unit="epoch")
        t_train = time.perf_counter()

        def on_epoch(epoch: int, loss: float, acc: float) -> None:
            test_loss, test_acc = evaluate(net, x_test, y_test)
            net.train()
            row = {"train_loss": loss, "train_acc": acc, "test_loss": test_loss}
            line = hooks.round(epoch + 1, {**row, "test_acc": test_acc})
            if cfg.run.progress:
                print(line, file=sys.stderr, flush=True)
            seconds = round(time.perf_counter() - t_train, 3)
            rows.append({"epoch": epoch + 1, **row, "test_acc": test_acc, "seconds": seconds})

        with hooks:
            gen = torch.Generator().manual_seed(cfg.run.seed)
            optim = Optim(
                cfg.train.epochs, cfg.train.batch_size, cfg.train.lr, cfg.train.weight_decay
            )
            fit(net, x_train, y_train, optim, gen, on_epoch=on_epoch)
            train_seconds = time.perf_counter() - t_train
            test_loss, test_acc = evaluate(net, x_test, y_test)
            hooks.text(f"final: test_acc {test_acc:.4f}, test_loss {test_loss:.4f}")

        h, w = ds.images.shape[1:3]
        channels = 1 if ds.images.ndim == 3 else ds.images.shape[3]
        summary = {
            "command": "tune",
            "dataset": cfg.data.dataset,
            "n_train": len(split.train),
            "n_test": len(split.test),
            **setting_fields(cfg),
            "test_acc": test_acc,
            "test_loss": test_loss,
            "bytes_per_image": service.bytes_per_image,
            "raw_image_bytes": raw_image_bytes(h, w, channels),
            "payload_shape": list(service.payload_shape),
            "trainable_params": net.trainable_parameters(),
            **service.stats(),
            "train_seconds": round(train_seconds, 3),
            "wall_seconds": round(time.perf_counter() - t0, 3),
        }
        (tmp / "config.toml").write_text(to_toml(cfg))
        pd.DataFrame(rows).to_csv(tmp / "metrics.csv", index=False)
        write_json(tmp / "summary.json", summary)
    summary["out"] = str(out)
    return summary


def summary_table(summary: dict[str, Any]) -> pd.DataFrame:
    """The few numbers a reader compares across runs, as a one-row table."""
    cols = {
        "test_acc": "test acc",
        "bytes_per_image": "bytes/image",
        "trainable_params": "trainable params",
        "backbone_forwards": "backbone forwards",
        "wall_seconds": "wall s",
    }
    row = {"gather": f"{summary['gather']} k={summary['k']}", "edge": summary["edge"]}
    row.update({label: summary[key] for key, label in cols.items()})
    return pd.DataFrame([row])
