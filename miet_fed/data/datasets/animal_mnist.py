"""`animal-mnist`: 10k 28x28 animal silhouettes (10 classes x 1000), PyPI `animal-mnist==0.4`."""

from __future__ import annotations

import gzip
import importlib.util
import pickle
from pathlib import Path

import numpy as np

from miet_fed.data.base import ImageDataset, package_version, short_hash
from miet_fed.data.datasets import DATASETS
from miet_fed.errors import MietError

# Label order checked by eye on the images: the README lists the animals, labels follow A-Z.
ANIMAL_MNIST_CLASSES = (
    "bear",
    "bird",
    "cat",
    "cow",
    "dog",
    "elephant",
    "giraffe",
    "horse",
    "sheep",
    "zebra",
)


@DATASETS.register("animal-mnist")
def load_animal_mnist() -> ImageDataset:
    """10k 28x28 animal silhouettes, 10 classes x 1000, from PyPI `animal-mnist==0.4`.

    The package's __init__ imports tensorflow, so its data files are located without importing it.
    """
    hint = "pip install --no-deps animal-mnist==0.4"
    spec = importlib.util.find_spec("animal_mnist")
    if spec is None or not spec.submodule_search_locations:
        raise MietError(f"dataset animal-mnist needs the Python package animal-mnist: {hint}")
    base = Path(next(iter(spec.submodule_search_locations))) / "data" / "Animal_MNIST"
    data_path = base / "animal_data_version_3.gz"
    label_path = base / "animal_label_version_3.gz"
    if not (data_path.is_file() and label_path.is_file()):
        raise MietError(f"animal-mnist data files are missing under {base}; reinstall: {hint}")
    # Trusted pickles: they ship inside a registry package (user files are never unpickled).
    with gzip.open(data_path, "rb") as f:
        images = pickle.load(f)
    with gzip.open(label_path, "rb") as f:
        labels = pickle.load(f)
    if not (
        isinstance(images, np.ndarray)
        and isinstance(labels, np.ndarray)
        and images.dtype == np.uint8
        and images.ndim == 3
        and labels.shape == (len(images),)
    ):
        raise MietError(f"animal-mnist data under {base} has an unexpected layout; run: {hint}")
    version = package_version("animal-mnist")
    return ImageDataset(
        name="animal-mnist",
        images=images,
        labels=labels.astype(np.int64),
        classes=ANIMAL_MNIST_CLASSES,
        fingerprint=short_hash("animal-mnist", version, data_path.stat().st_size),
    )
