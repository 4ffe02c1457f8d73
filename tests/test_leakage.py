"""The leakage measurement (issue 15, part 3): metrics against hand computations, the attacker's
pipeline can detect leakage when there is some, the command's files, bad input before any work."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from miet_fed.cli import main
from miet_fed.privacy import inversion
from miet_fed.privacy.metrics import C1_C2, gaussian_window, psnr, ssim
from tests.conftest import TINY, make_tiny_npz

# --- metrics -------------------------------------------------------------------------------------


def test_psnr_identical_is_inf_and_known_mse_gives_known_db():
    x = torch.rand(3, 1, 8, 8)
    assert torch.isinf(psnr(x, x)).all()
    a = torch.full((1, 1, 4, 4), 0.5, dtype=torch.float64)
    b = torch.full((1, 1, 4, 4), 0.6, dtype=torch.float64)  # MSE 0.01
    assert psnr(a, b).item() == pytest.approx(20.0, abs=1e-9)
    assert psnr(torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.25)).item() == pytest.approx(
        10 * math.log10(16), abs=1e-9
    )
    assert psnr(a * 255, b * 255, data_range=255.0).item() == pytest.approx(20.0, abs=1e-9)


def test_ssim_identical_is_one_and_noise_lowers_it():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 28, 28, generator=gen)
    assert ssim(x, x) == pytest.approx(torch.ones(2), abs=1e-12)
    small = (x + 0.05 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    large = (x + 0.3 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    s_small, s_large = ssim(small, x), ssim(large, x)
    assert (s_small < 1).all() and (s_large < s_small).all()


def test_ssim_of_constant_images_is_the_luminance_term():
    # No variance: contrast-structure term (0 + C2) / (0 + C2) = 1, SSIM = (2ab + C1)/(a²+b²+C1).
    a, b = 0.5, 0.25
    c1, _ = C1_C2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    got = ssim(torch.full((1, 1, 11, 11), a), torch.full((1, 1, 11, 11), b)).item()
    assert got == pytest.approx(expected, rel=1e-12)
    assert got == pytest.approx(0.8000640, abs=1e-6)  # by hand: 0.2501 / 0.3126


def test_ssim_matches_a_loop_over_windows():
    """The convolutional SSIM equals the textbook formula evaluated window by window."""
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(1, 1, 13, 14, generator=gen, dtype=torch.float64)
    y = (x + 0.2 * torch.rand(x.shape, generator=gen, dtype=torch.float64)).clamp(0, 1)
    w = gaussian_window().numpy()
    c1, c2 = C1_C2
    xs, ys = x[0, 0].numpy(), y[0, 0].numpy()
    vals = []
    for i in range(13 - 10):
        for j in range(14 - 10):
            px, py = xs[i : i + 11, j : j + 11], ys[i : i + 11, j : j + 11]
            mx, my = (w * px).sum(), (w * py).sum()
            vx = (w * (px - mx) ** 2).sum()
            vy = (w * (py - my) ** 2).sum()
            cxy = (w * (px - mx) * (py - my)).sum()
            vals.append(
                (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
            )
    assert ssim(x, y).item() == pytest.approx(float(np.mean(vals)), rel=1e-9)
    assert len(vals) == 12


# --- the attacker can see leakage when there is some ----------------------------------------------


def test_decoder_on_raw_pixels_beats_the_mean_image(tmp_path):
    data = np.load(make_tiny_npz(tmp_path / "t.npz"))
    x = torch.from_numpy(data["x"]).float()[:, None] / 255.0
    pub, dev = x[:90], x[90:]
    spec = inversion.DecoderSpec("vector", (256,), (1, 16, 16))
    net = inversion.train_decoder({"values": pub.flatten(1)}, pub, spec, epochs=40, seed=0)
    recon = inversion.reconstruct(net, {"values": dev.flatten(1)})
    mean = pub.mean(0, keepdim=True).expand_as(dev)
    gain = psnr(recon, dev).mean() - psnr(mean, dev).mean()
    assert gain > 3.0, f"decoder only {gain:.2f} dB above the mean image"
    assert ssim(recon, dev).mean() > ssim(mean, dev).mean() + 0.2
    # ... and a payload that carries nothing (zeros) gains nothing over the mean image
    zeros = {"values": torch.zeros(len(pub), 256)}
    blind = inversion.train_decoder(zeros, pub, spec, epochs=40, seed=0)
    guess = inversion.reconstruct(blind, {"values": torch.zeros(len(dev), 256)})
    assert abs(psnr(guess, dev).mean() - psnr(mean, dev).mean()) < 1.0


def test_token_decoder_reads_a_patch_grid():
    assert inversion.patch_grid(65) == (1, 8)
    assert inversion.patch_grid(5) == (1, 2)
    assert inversion.patch_grid(69) == (5, 8)  # CLS + 4 registers
    spec = inversion.DecoderSpec("layers", (3, 5, 8), (1, 16, 16))
    parts = {"values": torch.randn(4, 3, 5, 8)}
    net = inversion.InversionDecoder(spec, *inversion.feature_stats(parts, spec))
    out = net(parts["values"])
    assert out.shape == (4, 1, 16, 16) and out.min() >= 0 and out.max() <= 1


def test_figure_examples_cover_the_classes():
    from miet_fed.privacy.leakage import example_rows

    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    assert example_rows(labels, 4).tolist() == [0, 3, 5, 1]
    assert example_rows(labels, 20).tolist() == [0, 3, 5, 1, 4, 6, 2, 7]


# --- the command ----------------------------------------------------------------------------------


def _args(tmp_path, *extra):
    npz = make_tiny_npz(tmp_path / "tiny.npz")
    return ["leakage", "--dataset", f"npz:{npz}", *TINY, "--public", "60", "--devices", "30",
            "--epochs", "2", "--quiet", *extra]  # fmt: skip


def test_command_writes_csv_md_png_one_row_per_payload(tmp_path, capsys):
    gathers = "sum:0,sum:12,cls:12:int8,sum:12:int8:p2,sum:12:r16"
    assert main(_args(tmp_path, "--gathers", gathers, "--out", "results/leak")) == 0
    out = tmp_path / "results" / "leak"
    df = pd.read_csv(out / "leakage.csv")
    payloads = df[df.kind == "payload"]
    assert list(payloads.payload) == [
        "sum k=0 fp32",
        "sum k=12 fp32",
        "cls k=12 int8",
        "sum k=12 int8 pool2",
        "sum k=12 fp32 rank16",
    ]
    # vit_tiny at 32 px: 5 tokens x 192; int8 CLS: 192 bytes + a 4-byte scale; pooled 2 x 2:
    # CLS + 1 token, int8 with scales; projected to 16 channels: 5 x 16 fp32
    assert list(payloads.bytes_per_image) == [3840, 3840, 196, 392, 320]
    assert payloads[["psnr", "ssim", "reid_acc"]].notna().all().all()
    base = df[df.kind == "baseline"].set_index("payload")
    assert math.isinf(base.loc["raw image (upper bound)", "psnr"])
    assert base.loc["raw image (upper bound)", "ssim"] == pytest.approx(1.0)
    assert base.loc["no information (mean image)", "bytes_per_image"] == 0
    md = (out / "leakage.md").read_text()
    for label in payloads.payload:
        assert f"| {label} |" in md
    assert (out / "reconstructions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| sum k=12 fp32 |" in capsys.readouterr().out
    # another run's folder is not silently replaced
    capsys.readouterr()
    assert main(_args(tmp_path, "--gathers", "sum:0", "--out", "results/leak")) == 2
    assert "other settings" in capsys.readouterr().err
    assert len(pd.read_csv(out / "leakage.csv")) == len(df)


BAD = {
    "unknown gather": (["--gathers", "mean:3"], "unknown gather function 'mean'"),
    "k out of range": (["--gathers", "sum:13"], "larger than the depth 12"),
    "not gather:k": (["--gathers", "sum"], "is not GATHER:K"),
    "unknown dtype": (["--gathers", "sum:1:fp8"], "unknown feature dtype 'fp8'"),
    "pool off the grid": (["--gathers", "sum:12:p3"], "does not divide the 2x2 patch grid"),
    "rank too large": (["--gathers", "sum:12:r500"], "larger than the payload dimension 192"),
    "too many images": (["--public", "100", "--devices", "30"], "more than the 120"),
    "no devices": (["--devices", "0"], "--devices must be at least 1"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_before_any_work(case, tmp_path, capsys):
    extra, message = BAD[case]
    assert main(_args(tmp_path, *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "cache").exists()  # no backbone, no features
    assert not (tmp_path / "results").exists()
