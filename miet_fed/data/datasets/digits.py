"""`digits`: 1,797 8x8 digits bundled with scikit-learn."""

from __future__ import annotations

import numpy as np

from miet_fed.data.base import ImageDataset, package_version, short_hash
from miet_fed.data.datasets import DATASETS
from miet_fed.errors import MietError


@DATASETS.register("digits")
def load_digits() -> ImageDataset:
    """1,797 8x8 digits bundled with scikit-learn; 0..16 intensities scaled to 0..255."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as e:
        raise MietError(
            "dataset digits needs the Python package scikit-learn: pip install scikit-learn"
        ) from e
    bunch = sk_load_digits()
    images = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return ImageDataset(
        name="digits",
        images=images,
        labels=np.asarray(bunch.target, dtype=np.int64),
        classes=tuple(str(c) for c in bunch.target_names),
        fingerprint=short_hash("digits", package_version("scikit-learn")),
    )
