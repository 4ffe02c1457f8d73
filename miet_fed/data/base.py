"""A labelled image set in one canonical layout (`ImageDataset`), and the content id every
dataset loader gives it (`short_hash`): the feature cache is keyed on it.

numpy + stdlib only, so that data loading never pays for torch or Flower.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from dataclasses import dataclass

import numpy as np

# Bump when the conversion of a source to arrays changes, so cached features keyed on the
# fingerprint are invalidated.
_FORMAT_VERSION = 1


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """A labelled image set in one canonical layout, so every consumer handles one case.

    `images` is uint8 [N,H,W] (grayscale) or [N,H,W,3] (RGB); [N,H,W,1] is squeezed to [N,H,W].
    `labels` is int64 [N] in 0..C-1 with C = len(classes). `fingerprint` is a short hex id of the
    content/version, used as the feature-cache key.
    """

    name: str
    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    fingerprint: str

    def __post_init__(self) -> None:
        images = np.asarray(self.images)
        labels = np.asarray(self.labels)
        if images.dtype != np.uint8:
            raise ValueError(f"images must be uint8, got {images.dtype}")
        if images.ndim == 4 and images.shape[-1] == 1:
            images = images[..., 0]
        if not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)):
            raise ValueError(f"images must be [N,H,W] or [N,H,W,3], got {images.shape}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise ValueError(f"labels must be [N] with N={len(images)}, got {labels.shape}")
        if labels.dtype.kind not in "iu":
            raise ValueError(f"labels must be integers, got {labels.dtype}")
        classes = tuple(str(c) for c in self.classes)
        if not classes:
            raise ValueError("classes must not be empty")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
            raise ValueError(f"labels must lie in 0..{len(classes) - 1}")
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "labels", labels.astype(np.int64, copy=False))
        object.__setattr__(self, "classes", classes)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (
            f"ImageDataset(name={self.name!r}, images={self.images.shape}, "
            f"classes={self.num_classes}, fingerprint={self.fingerprint!r})"
        )


def short_hash(*parts: object) -> str:
    """A 16-hex-digit id: short enough for file names, long enough not to collide."""
    h = hashlib.sha256()
    for part in (_FORMAT_VERSION, *parts):
        h.update(repr(part).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def package_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def digit_classes() -> tuple[str, ...]:
    return tuple(str(i) for i in range(10))
