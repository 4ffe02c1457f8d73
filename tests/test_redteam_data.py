"""Red team, image folders: every PIL mode a scientist's files come in is converted by the true
range of its values, or refused in one line; never clipped at 255 or truncated to zeros.

Before this, a folder of 16-bit PNGs was clipped at 255 (every pixel white) and a folder of float
TIFFs in 0..1 became zeros, both with exit 0: a set that trains to 100 % at 8 bit trained to
chance. The end-to-end case below is that set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from miet_fed.cli import main
from miet_fed.data.datasets import load_folder
from miet_fed.errors import MietError
from tests.conftest import TINY

pytestmark = pytest.mark.redteam

RAMP8 = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4  # 0..252


def _save(root: Path, images: list[Image.Image], suffix: str) -> Path:
    """Two classes holding the same images: load_folder needs two."""
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i, im in enumerate(images):
            im.save(root / cls / f"{i}{suffix}")
    return root


def _palette() -> Image.Image:
    im = Image.fromarray(RAMP8, mode="L").convert("P")
    return im


def _rgba(alpha: int) -> Image.Image:
    rgb = np.stack([RAMP8, RAMP8 // 2, np.full_like(RAMP8, 200)], axis=-1)
    a = np.full((8, 8, 1), alpha, np.uint8)
    return Image.fromarray(np.concatenate([rgb, a], axis=-1), mode="RGBA")


def _la(alpha: int) -> Image.Image:
    return Image.fromarray(np.stack([RAMP8, np.full_like(RAMP8, alpha)], -1), mode="LA")


#: name -> (image, file suffix, expected uint8 array (grey H x W or H x W x 3))
CONVERTED = {
    "8-bit grey": (Image.fromarray(RAMP8), ".png", RAMP8),
    "1-bit": (
        Image.fromarray(RAMP8 > 100).convert("1"),
        ".png",
        np.where(RAMP8 > 100, 255, 0).astype(np.uint8),
    ),
    "16-bit grey PNG": (
        Image.fromarray(RAMP8.astype(np.uint16) * 257),
        ".png",
        RAMP8,
    ),
    "16-bit grey TIFF": (
        Image.fromarray(RAMP8.astype(np.uint16) * 257),
        ".tif",
        RAMP8,
    ),
    "float TIFF in 0..1": (
        Image.fromarray(RAMP8.astype(np.float32) / 255.0),
        ".tif",
        RAMP8,
    ),
    "palette": (_palette(), ".png", None),  # expanded to its RGB colours
    "LA opaque": (_la(255), ".png", RAMP8),
    "LA half transparent": (_la(128), ".png", np.round(RAMP8 * 128.0 / 255).astype(np.uint8)),
    "RGBA opaque": (_rgba(255), ".png", np.asarray(_rgba(255))[..., :3]),
    "RGBA transparent": (_rgba(0), ".png", np.zeros((8, 8, 3), np.uint8)),
    "CMYK JPEG": (Image.new("CMYK", (8, 8), (0, 0, 0, 0)), ".jpg", np.full((8, 8, 3), 255)),
    "RGB": (Image.fromarray(np.asarray(_rgba(255))[..., :3]), ".png", None),
}


@pytest.mark.parametrize("case", sorted(CONVERTED))
def test_mode_is_converted_by_its_true_range(case, tmp_path):
    im, suffix, want = CONVERTED[case]
    ds = load_folder(_save(tmp_path / "imgs", [im, im], suffix))
    got = ds.images[0]
    if want is None:
        want = np.asarray(im.convert("RGB"))
    assert got.dtype == np.uint8
    if suffix == ".jpg":  # lossy: close, not equal
        assert np.abs(got.astype(int) - want).max() <= 3
    else:
        np.testing.assert_array_equal(got, want)


#: name -> (image, suffix, fragment of the one line)
REFUSED = {
    "float TIFF beyond 0..1": (
        Image.fromarray(RAMP8.astype(np.float32)),
        ".tif",
        "only 0..1 has a defined scale",
    ),
    "float TIFF negative": (
        Image.fromarray(RAMP8.astype(np.float32) / 255.0 - 0.5),
        ".tif",
        "only 0..1",
    ),
    "float TIFF NaN": (
        Image.fromarray(np.full((8, 8), np.nan, np.float32)),
        ".tif",
        "NaN or infinite",
    ),
    "32-bit integer TIFF": (
        Image.fromarray(RAMP8.astype(np.int32) * 1000),
        ".tif",
        "32-bit integer",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_mode_without_a_scale_is_refused(case, tmp_path):
    im, suffix, fragment = REFUSED[case]
    with pytest.raises(MietError) as info:
        load_folder(_save(tmp_path / "imgs", [im, im], suffix))
    msg = str(info.value)
    assert fragment in msg and "\n" not in msg and "imgs" in msg


def test_16_bit_set_trains_like_its_8_bit_twin(tmp_path, capsys):
    """Three classes told apart by brightness, stored as 16-bit PNGs: above chance, as the same
    set at 8 bit (before: every pixel clipped to 255, chance)."""
    rng = np.random.default_rng(0)
    for bits in (8, 16):
        root = tmp_path / f"set{bits}"
        for c in range(3):
            (root / f"c{c}").mkdir(parents=True)
            for i in range(20):
                level = rng.integers(0, 40, (16, 16)) + 80 * c  # 0..199, 8-bit values
                arr = level.astype(np.uint16) * 257 if bits == 16 else level.astype(np.uint8)
                Image.fromarray(arr).save(root / f"c{c}" / f"{i}.png")
    accs = {}
    for bits in (8, 16):
        argv = ["tune", "--dataset", f"folder:{tmp_path / f'set{bits}'}", *TINY]
        argv += ["--set", "data.n_train=30", "--set", "data.n_test=30", "--set", "train.epochs=20"]
        argv += ["--set", "data.n_val=6"]
        assert main([*argv, "--out", f"results/b{bits}", "--quiet"]) == 0
        accs[bits] = json.loads((Path(f"results/b{bits}") / "summary.json").read_text())
    capsys.readouterr()
    assert accs[16]["test_acc"] == accs[8]["test_acc"] > 0.6  # chance is 0.33
