"""The cloud's feature service: backbone + gather + cache behind one object.

`miet-fed tune` uses it in-process; the federation wraps the same object in a Ray actor. It builds
the backbone only when the cache lacks an image, counts backbone forwards, cache hits and bytes
served, and knows the payload's shape and bytes without running anything.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from miet_fed.cloud.backbone import CloudBackbone, build_backbone, describe_vit, resolve_weights
from miet_fed.cloud.cache import FeatureStore, fill
from miet_fed.cloud.gather import get_gather
from miet_fed.cloud.payload import (
    BasisStore,
    derive,
    fit_pca,
    pool_grid,
    project,
    sample_ids,
)
from miet_fed.comm import codec
from miet_fed.comm.cost import check_dtype, encoded_bytes, format_shape
from miet_fed.config import ModelConfig
from miet_fed.errors import MietError
from miet_fed.paths import cache_dir


class FeatureService:
    """Gathered features of one dataset under one model config, computed once per image."""

    def __init__(
        self,
        model: ModelConfig,
        images: np.ndarray,
        dataset_fingerprint: str,
        cache_root: Path | None = None,
        progress: bool = True,
        shares: FeatureService | None = None,
    ) -> None:
        self.cfg = model
        self.shares = shares  # another dataset's service whose backbone this one uses
        self.images = images
        self.progress = progress
        self.gather = get_gather(model.gather)
        self.payload_kind, self.payload_shape, self.bytes_per_image = payload_info(model)
        self._weights_file, self.weights_id = resolve_weights(model.name, model.weights)
        self.key = {
            "model": model.name,
            "weights": self.weights_id,
            "img_size": model.img_size,
            "dataset": dataset_fingerprint,
            "gather": model.gather,
            "k": model.k,
            "dtype": model.dtype,
        }
        # payload formats join the key only when used, so caches written before they existed
        # (and every run without them) keep their digest
        if model.token_pool != 1:
            self.key["token_pool"] = model.token_pool
        basis_key = {k: v for k, v in self.key.items() if k != "dtype"}
        if model.proj_rank:
            self.key |= {"proj_rank": model.proj_rank, "proj_sample": model.proj_sample}
        self.store = FeatureStore(cache_root or cache_dir(), self.key)
        self.basis = BasisStore(
            cache_root or cache_dir(), {**basis_key, "proj_sample": model.proj_sample}
        )
        self.prefix = describe_vit(model.name, model.img_size)["prefix"]
        self._backbone: CloudBackbone | None = None
        self.forwards = 0
        self.builds = 0  # times the backbone was built by this service (at most once)
        self.cache_hits = 0
        self.basis_forwards = 0  # images run to fit the projection basis (not payloads served)
        self.bytes_served = 0
        self.extract_seconds = 0.0
        #: called as on_progress(done, total) after each backbone batch of an extraction
        self.on_progress: Callable[[int, int], None] | None = None

    @property
    def backbone(self) -> CloudBackbone:
        if self.shares is not None:  # one model for every task: built once, by the first
            return self.shares.backbone
        if self._backbone is None:
            self._backbone = build_backbone(
                self.cfg.name, self.cfg.weights, self.cfg.img_size, self.cfg.device
            )
            self.builds += 1
        return self._backbone

    def _pooled(self, images: np.ndarray) -> torch.Tensor:
        """Gathered features, token-pooled as `model.token_pool` asks."""
        out = self.backbone.gathered(images, self.gather, self.cfg.k)
        if not torch.isfinite(out).all():
            raise MietError("the backbone produced NaN/inf features; check the weights file")
        return pool_grid(out, self.prefix, self.cfg.token_pool)

    def _fit_basis(self) -> dict[str, torch.Tensor]:
        """PCA on the pooled payloads of the fixed image sample (see `miet_fed.cloud.payload`)."""
        ids = sample_ids(len(self.images), self.cfg.proj_sample)
        step = self.cfg.batch_size
        if self.progress:
            print(
                f"projection basis: fitting PCA on {len(ids)} images (once; cached in "
                f"{self.basis.path.parent})",
                file=sys.stderr,
            )

        def rows() -> Iterator[torch.Tensor]:  # one batch at a time: memory stays bounded
            for b in range(0, len(ids), step):
                self.basis_forwards += len(ids[b : b + step])
                yield self._pooled(self.images[ids[b : b + step]])

        return {**fit_pca(rows), "sample_ids": torch.from_numpy(ids.astype(np.int64))}

    def _compute(self, images: np.ndarray) -> torch.Tensor:
        out = self._pooled(images)
        if self.cfg.proj_rank:
            out = project(out, self.basis.get(self._fit_basis), self.cfg.proj_rank)
        return out

    def ensure(self, ids: np.ndarray) -> int:
        """Compute what the cache lacks among `ids`; returns the number of backbone forwards."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) and (ids.min() < 0 or ids.max() >= len(self.images)):
            raise MietError(f"image ids must lie in 0..{len(self.images) - 1}")
        start = time.perf_counter()
        computed = fill(
            self.store,
            ids,
            self.images,
            self._compute,
            self.cfg.dtype,
            batch_size=self.cfg.batch_size,
            progress=self.progress,
            report=self.on_progress,
        )
        self.forwards += computed
        self.extract_seconds += time.perf_counter() - start
        return computed

    def missing(self, ids: np.ndarray) -> np.ndarray:
        """The ids among `ids` the cache lacks."""
        return self.store.missing(np.asarray(ids, dtype=np.int64))

    def features(self, ids: np.ndarray, fmt: str = "") -> dict[str, torch.Tensor]:
        """Encoded payloads for `ids` (computed if missing): exactly what the edge receives.
        `fmt` (a planned device's format, `miet_fed.comm.planner`) is derived from the cached
        payload; '' = the cached format itself."""
        ids = np.asarray(ids, dtype=np.int64)
        computed = self.ensure(ids)
        self.cache_hits += len(np.unique(ids)) - computed
        parts = self.store.get(ids)
        if fmt:
            parts = self._derived(parts, fmt)
        self.bytes_served += codec.nbytes(parts)
        return parts

    def _derived(self, parts: dict[str, torch.Tensor], fmt: str) -> dict[str, torch.Tensor]:
        from miet_fed.comm.planner import PayloadFormat, check_derivable

        want = PayloadFormat.parse(fmt)
        if want == PayloadFormat(self.cfg.dtype, self.cfg.token_pool):
            return parts
        check_derivable(want, self.cfg.dtype, self.cfg.token_pool)
        return derive(parts, self.prefix, want.token_pool // self.cfg.token_pool, want.dtype)

    def reset_stats(self) -> None:
        """Counts start again at zero: a run that reuses this service (a sweep's backbone actor)
        reports only its own forwards, hits and bytes."""
        self.forwards = self.builds = self.cache_hits = self.basis_forwards = 0
        self.bytes_served, self.extract_seconds = 0, 0.0
        self.basis.fits = 0

    def stats(self) -> dict[str, float]:
        return {
            "backbone_forwards": self.forwards,
            "backbone_builds": self.builds,
            "cache_hits": self.cache_hits,
            "bytes_served": self.bytes_served,
            "extract_seconds": round(self.extract_seconds, 3),
            "basis_fits": self.basis.fits,
            "basis_forwards": self.basis_forwards,
        }


def payload_info(model: ModelConfig, fmt: str = "") -> tuple[str, tuple[int, ...], int]:
    """(payload kind, shape per image, bytes per image) from the config alone: no weights.
    `fmt` (a planned format, `miet_fed.comm.planner`) replaces model.dtype and model.token_pool."""
    if fmt:
        from dataclasses import replace

        from miet_fed.comm.planner import PayloadFormat

        want = PayloadFormat.parse(fmt)
        model = replace(model, dtype=want.dtype, token_pool=want.token_pool)
    gather = get_gather(model.gather)
    check_dtype(model.dtype)
    shape = describe_vit(model.name, model.img_size)
    if not 0 <= model.k <= shape["depth"]:
        raise MietError(
            f"model.k={model.k} is larger than the depth {shape['depth']} of '{model.name}'; "
            f"use 0..{shape['depth']}"
        )
    payload = gather.payload_shape(shape["tokens"], shape["dim"], model.k)
    payload = format_shape(payload, gather.kind, shape["prefix"], model.token_pool, model.proj_rank)
    return gather.kind, payload, encoded_bytes(payload, model.dtype)
