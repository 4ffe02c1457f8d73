"""`fashion-mnist`: Fashion-MNIST train + test (70k 28x28, 10 classes) from the Debian package
`dataset-fashion-mnist` (no PyPI package ships it; a clear error when it is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from miet_fed.data.base import ImageDataset, short_hash
from miet_fed.data.datasets import DATASETS
from miet_fed.data.idx import read_idx
from miet_fed.errors import MietError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


@DATASETS.register("fashion-mnist")
def load_fashion_mnist(root: str | os.PathLike[str] | None = None) -> ImageDataset:
    """Fashion-MNIST train + test (70k 28x28, 10 classes) from Debian `dataset-fashion-mnist`."""
    root = Path(FASHION_MNIST_DIR if root is None else root)
    names = [
        f"{split}-{kind}-ubyte.gz"
        for split in ("train", "t10k")
        for kind in ("images-idx3", "labels-idx1")
    ]
    files = [root / n for n in names]
    if not root.is_dir():
        raise MietError(
            "fashion-mnist needs Debian package dataset-fashion-mnist: "
            f"sudo apt-get install dataset-fashion-mnist (no {root})"
        )
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise MietError(
            "fashion-mnist files are missing from Debian package dataset-fashion-mnist: "
            f"sudo apt-get install --reinstall dataset-fashion-mnist ({', '.join(missing)} "
            f"not in {root})"
        )
    parts_x, parts_y = [], []
    for img_file, lbl_file in (files[0:2], files[2:4]):
        x, y = read_idx(img_file), read_idx(lbl_file)
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y) or x.dtype != np.uint8:
            raise MietError(
                f"{img_file.name} {x.shape} and {lbl_file.name} {y.shape} do not match; "
                "reinstall: sudo apt-get install --reinstall dataset-fashion-mnist"
            )
        parts_x.append(x)
        parts_y.append(y.astype(np.int64))
    stats = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    return ImageDataset(
        name="fashion-mnist",
        images=np.concatenate(parts_x),
        labels=np.concatenate(parts_y),
        classes=FASHION_MNIST_CLASSES,
        fingerprint=short_hash("fashion-mnist", stats),
    )
