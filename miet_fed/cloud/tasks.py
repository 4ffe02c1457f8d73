"""One backbone serving several datasets (a multi-task federation's tasks).

Each dataset keeps its own feature cache entry (keyed on its own fingerprint, so a task's
features are the ones a single-dataset run of it computes and caches); they share one model,
built at most once. Image ids are the run's: dataset i's images are ids `offset_i ..`, in the
order the datasets are given. Nothing here knows about Flower.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from miet_fed.cloud.service import FeatureService
from miet_fed.config import ModelConfig
from miet_fed.data.base import ImageDataset
from miet_fed.errors import MietError


class TaskFeatures:
    """`FeatureService`'s interface (ensure, features, missing, stats) over several datasets."""

    def __init__(
        self,
        model: ModelConfig,
        datasets: list[ImageDataset],
        cache_root: Path | None = None,
        progress: bool = True,
    ) -> None:
        self.services: list[FeatureService] = []
        by_content: dict[str, FeatureService] = {}  # two tasks on one dataset: one service
        for ds in datasets:
            first = self.services[0] if self.services else None
            if ds.fingerprint not in by_content:
                by_content[ds.fingerprint] = FeatureService(
                    model, ds.images, ds.fingerprint, cache_root, progress, first
                )
            self.services.append(by_content[ds.fingerprint])
        self._distinct = list(by_content.values())
        sizes = [len(ds.images) for ds in datasets]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        head = self.services[0]
        self.payload_kind, self.payload_shape = head.payload_kind, head.payload_shape
        self.bytes_per_image = head.bytes_per_image
        self.on_progress = None

    def _split(self, ids: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """(dataset, positions in ids, local ids) for each dataset `ids` touch."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) and (ids.min() < 0 or ids.max() >= self.offsets[-1]):
            raise MietError(f"image ids must lie in 0..{self.offsets[-1] - 1}")
        which = np.searchsorted(self.offsets, ids, side="right") - 1
        out = []
        for t in np.unique(which):
            pos = np.flatnonzero(which == t)
            out.append((int(t), pos, ids[pos] - self.offsets[t]))
        return out

    def ensure(self, ids: np.ndarray) -> int:
        total = 0
        for t, _, local in self._split(ids):
            self.services[t].on_progress = self.on_progress
            total += self.services[t].ensure(local)
        return total

    def missing(self, ids: np.ndarray) -> np.ndarray:
        parts = [
            self.services[t].missing(local) + self.offsets[t] for t, _, local in self._split(ids)
        ]
        return np.concatenate([np.zeros(0, np.int64), *parts])

    def features(self, ids: np.ndarray, fmt: str = "") -> dict[str, torch.Tensor]:
        """Payloads in the order of `ids`, whatever datasets they come from."""
        ids = np.asarray(ids, dtype=np.int64)
        parts = self._split(ids)
        if len(parts) == 1:
            t, _, local = parts[0]
            return self.services[t].features(local, fmt)
        if not parts:
            return self.services[0].features(ids, fmt)
        blocks = [(pos, self.services[t].features(local, fmt)) for t, pos, local in parts]
        first = blocks[0][1]
        out = {k: v.new_empty((len(ids), *v.shape[1:])) for k, v in first.items()}
        for pos, block in blocks:
            index = torch.from_numpy(pos)
            for k, v in block.items():
                out[k][index] = v
        return out

    def reset_stats(self) -> None:
        for s in self._distinct:
            s.reset_stats()

    def stats(self) -> dict[str, float]:
        """Counts summed over the datasets (builds: the one shared model's)."""
        total: dict[str, float] = {}
        for s in self._distinct:
            for k, v in s.stats().items():
                total[k] = total.get(k, 0) + v
        return total
