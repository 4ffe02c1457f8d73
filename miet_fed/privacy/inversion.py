"""The attacker: an inversion decoder from a decoded payload back to the image, and a
re-identification classifier trained on original images.

Both are deliberately small and CPU-fast (one decoder family, a few epochs): the measurement is a
lower bound on what a payload reveals, not the best attack. Token payloads go through a per-token
linear projection laid out on the patch grid and a small upsampling conv stack (the spatial layout
is the attacker's main prior); vector payloads (CLS, or raw pixels as a sanity check) through an
MLP. Inputs are standardised per feature with statistics of the public set.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from miet_fed.comm import codec

#: A payload source: encoded wire tensors for a range of rows of one image set.
Parts = dict[str, torch.Tensor]


@dataclass(frozen=True)
class DecoderSpec:
    """What the decoder reads ('tokens' [T, D], 'layers' [L, T, D], 'vector' [D]) and writes."""

    kind: str
    shape: tuple[int, ...]
    image_shape: tuple[int, int, int]  # C, H, W


def patch_grid(tokens: int) -> tuple[int, int]:
    """(prefix tokens, grid side) of a square ViT token map: CLS first, then registers."""
    for prefix in (1, 0, *range(2, 9)):
        side = math.isqrt(max(tokens - prefix, 0))
        if side > 0 and side * side == tokens - prefix:
            return prefix, side
    raise ValueError(f"{tokens} tokens are not a square patch grid plus a few prefix tokens")


def decoded(parts: Parts, rows: slice | torch.Tensor) -> torch.Tensor:
    """Float payload of some rows (decoded per batch: an int8 set stays int8 in memory)."""
    return codec.decode(codec.select(parts, rows))


def feature_stats(parts: Parts, spec: DecoderSpec, chunk: int = 256) -> tuple[torch.Tensor, ...]:
    """Per-feature mean and std over images (and tokens), in chunks: the `all` payload of a
    public set is gigabytes once decoded."""
    n = len(parts["values"])
    total = sq = None
    count = 0
    for start in range(0, n, chunk):
        x = _features(decoded(parts, slice(start, start + chunk)), spec).double()
        flat = x.reshape(-1, x.shape[-1])
        total = flat.sum(0) if total is None else total + flat.sum(0)
        sq = (flat**2).sum(0) if sq is None else sq + (flat**2).sum(0)
        count += len(flat)
    mean = total / count
    std = (sq / count - mean**2).clamp_min(0).sqrt().clamp_min(1e-6)
    return mean.float(), std.float()


def _features(x: torch.Tensor, spec: DecoderSpec) -> torch.Tensor:
    """[B, *payload] -> [B, features] (vector) or [B, grid*grid, L*D] (token maps, no prefix)."""
    if spec.kind == "vector":
        return x.reshape(len(x), -1)
    if spec.kind == "tokens":
        x = x[:, None]
    b, layers, tokens, dim = x.shape
    prefix, _ = patch_grid(tokens)
    return x[:, :, prefix:].permute(0, 2, 1, 3).reshape(b, tokens - prefix, layers * dim)


class InversionDecoder(nn.Module):
    """Payload -> image in [0, 1], [B, C, H, W]."""

    def __init__(self, spec: DecoderSpec, mean: torch.Tensor, std: torch.Tensor, width: int = 32):
        super().__init__()
        self.spec = spec
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        c, h, w = spec.image_shape
        features = mean.numel()
        if spec.kind == "vector":
            self.mlp = nn.Sequential(nn.Linear(features, 512), nn.GELU(), nn.Linear(512, c * h * w))
            return
        self.grid = patch_grid(spec.shape[-2])[1]
        self.proj = nn.Linear(features, width)
        self.coarse = nn.Conv2d(width, width, 3, padding=1)
        self.mid = nn.Conv2d(width, width // 2, 3, padding=1)
        self.fine = nn.Conv2d(width // 2, width // 4, 3, padding=1)
        self.out = nn.Conv2d(width // 4, c, 3, padding=1)

    def forward(self, payload: torch.Tensor) -> torch.Tensor:
        c, h, w = self.spec.image_shape
        x = (_features(payload, self.spec) - self.mean) / self.std
        if self.spec.kind == "vector":
            return torch.sigmoid(self.mlp(x)).view(-1, c, h, w)
        x = self.proj(x).transpose(1, 2).reshape(len(x), -1, self.grid, self.grid)
        x = F.gelu(self.coarse(x))
        x = F.interpolate(x, size=(max(h // 2, 1), max(w // 2, 1)), mode="bilinear")
        x = F.gelu(self.mid(x))
        x = F.interpolate(x, size=(h, w), mode="bilinear")
        return torch.sigmoid(self.out(F.gelu(self.fine(x))))


def train_decoder(
    parts: Parts,
    images: torch.Tensor,
    spec: DecoderSpec,
    epochs: int,
    seed: int,
    batch_size: int = 64,
    lr: float = 2e-3,
) -> InversionDecoder:
    """Fit the decoder on (public payload, public image) pairs with MSE; fixed seed."""
    mean, std = feature_stats(parts, spec)
    torch.manual_seed(seed)
    net = InversionDecoder(spec, mean, std)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = max(epochs * math.ceil(len(images) / batch_size), 1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=gen)
        for start in range(0, len(images), batch_size):
            rows = order[start : start + batch_size]
            loss = F.mse_loss(net(decoded(parts, rows)), images[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return net.eval()


@torch.no_grad()
def reconstruct(net: nn.Module, parts: Parts, chunk: int = 256) -> torch.Tensor:
    n = len(parts["values"])
    return torch.cat([net(decoded(parts, slice(s, s + chunk))) for s in range(0, n, chunk)])


class PixelClassifier(nn.Module):
    """A small CNN on pixels: the re-identification judge, trained on original images only."""

    def __init__(self, channels: int, classes: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(32 * 16, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def train_classifier(
    images: torch.Tensor, labels: torch.Tensor, classes: int, epochs: int, seed: int
) -> PixelClassifier:
    torch.manual_seed(seed)
    net = PixelClassifier(images.shape[1], classes)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=gen)
        for start in range(0, len(images), 64):
            rows = order[start : start + 64]
            loss = F.cross_entropy(net(images[rows]), labels[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


@torch.no_grad()
def accuracy(
    net: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, labels: torch.Tensor
) -> float:
    preds = torch.cat([net(images[s : s + 256]).argmax(1) for s in range(0, len(images), 256)])
    return float((preds == labels).double().mean())
