"""Reconstruction quality: PSNR and SSIM, in torch, with no dependency beyond it.

SSIM is Wang et al. (2004): an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, computed
on the 'valid' part of the image (no padding, as the authors' reference code), averaged over the
window positions and the channels. Both take images in [0, data_range], shaped [N, C, H, W].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

WINDOW = 11
SIGMA = 1.5
K1, K2 = 0.01, 0.03
#: SSIM's stabilisers for data_range 1: (K1 L)^2, (K2 L)^2
C1_C2 = ((K1 * 1.0) ** 2, (K2 * 1.0) ** 2)


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB, [N]. Identical images give +inf (no cap: a cap would hide the one
    case that means 'the payload is the image')."""
    mse = ((x.double() - y.double()) ** 2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse)  # mse 0 -> +inf


def gaussian_window(size: int = WINDOW, sigma: float = SIGMA) -> torch.Tensor:
    """[size, size] Gaussian weights summing to 1."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image SSIM, [N]: mean of the SSIM map over valid window positions and channels.

    Images smaller than the window use a window of their own size (odd, at least 3), so a
    16 px test image still has a defined score."""
    x, y = x.double(), y.double()
    n, c, h, w = x.shape
    size = min(WINDOW, h, w)
    size = size if size % 2 else size - 1
    if size < 3:
        raise ValueError(f"SSIM needs images of at least 3x3 pixels, got {h}x{w}")
    win = gaussian_window(size, SIGMA * size / WINDOW if size < WINDOW else SIGMA)
    win = win.to(x.device).expand(c, 1, size, size)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, win, groups=c)

    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    num = (2 * mx * my + c1) * (2 * cxy + c2)
    den = (mx * mx + my * my + c1) * (vx + vy + c2)
    return (num / den).flatten(1).mean(dim=1)


def mean_finite(values: torch.Tensor) -> float:
    """Mean of per-image scores; +inf if any is +inf (the raw-image bound)."""
    values = values.double()
    if torch.isinf(values).any():
        return math.inf
    return float(values.mean())
