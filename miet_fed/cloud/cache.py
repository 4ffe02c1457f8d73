"""On-disk cache of gathered features, one entry per image, so the backbone runs once per image.

Layout: `<cache>/features/<key digest>/key.json` plus shards `shard-*.safetensors`, each holding
the image ids it covers and the encoded payload (the bytes the edge would receive). The key holds
everything that changes the features (model, weights digest, image size, dataset fingerprint,
gather, k, dtype), so a cache entry can never be served for the wrong setting. Each shard stores a
sha256 of its tensors; a shard that fails to load or to verify is deleted and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from miet_fed.comm import codec

CACHE_VERSION = 1


def key_digest(key: dict) -> str:
    blob = json.dumps({**key, "version": CACHE_VERSION}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def _tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(name.encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class FeatureStore:
    """Gathered features of one key, per image id, loaded into memory and extended on demand."""

    def __init__(self, root: Path, key: dict) -> None:
        self.key = dict(key)
        self.dir = Path(root) / "features" / key_digest(key)
        self.discarded: list[str] = []  # shards found damaged and deleted
        self._ids = np.zeros(0, dtype=np.int64)
        self._parts: dict[str, torch.Tensor] = {}
        self._load()

    def __len__(self) -> int:
        return len(self._ids)

    def _load(self) -> None:
        if not self.dir.is_dir():
            return
        ids, parts = [], []
        for shard in sorted(self.dir.glob("shard-*.safetensors")):
            try:
                with safe_open(str(shard), framework="pt") as f:
                    meta = f.metadata() or {}
                    tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
                if meta.get("sha256") != _tensor_digest(tensors) or "ids" not in tensors:
                    raise ValueError("checksum mismatch")
            except Exception:  # noqa: BLE001 - any damage means: do not trust, rebuild
                self.discarded.append(shard.name)
                shard.unlink(missing_ok=True)
                continue
            ids.append(tensors.pop("ids").numpy())
            parts.append(tensors)
        if self.discarded:
            print(
                f"feature cache: discarded {len(self.discarded)} damaged shard(s) in {self.dir}; "
                "their images will be recomputed",
                file=sys.stderr,
            )
        if ids:
            self._set(np.concatenate(ids), {k: torch.cat([p[k] for p in parts]) for k in parts[0]})

    def _set(self, ids: np.ndarray, parts: dict[str, torch.Tensor]) -> None:
        ids, first = np.unique(ids, return_index=True)  # drop duplicates from concurrent writers
        self._ids = ids
        self._parts = {k: v[torch.from_numpy(first)] for k, v in parts.items()}

    def missing(self, ids: np.ndarray) -> np.ndarray:
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        return ids[~np.isin(ids, self._ids)]

    def add(self, ids: np.ndarray, parts: dict[str, torch.Tensor]) -> None:
        """Persist one shard atomically (temp file + rename), then extend the in-memory table."""
        ids = np.asarray(ids, dtype=np.int64)
        self.dir.mkdir(parents=True, exist_ok=True)
        key_file = self.dir / "key.json"
        if not key_file.exists():
            tmp = key_file.with_suffix(f".{uuid.uuid4().hex}.tmp")
            tmp.write_text(json.dumps(self.key, indent=1, sort_keys=True))
            os.replace(tmp, key_file)
        tensors = {
            "ids": torch.from_numpy(ids.copy()),
            **{k: v.contiguous() for k, v in parts.items()},
        }
        name = f"shard-{uuid.uuid4().hex[:16]}.safetensors"
        tmp = self.dir / f".{name}.tmp"
        save_file(tensors, str(tmp), metadata={"sha256": _tensor_digest(tensors)})
        os.replace(tmp, self.dir / name)
        if len(self._ids):
            merged = {k: torch.cat([self._parts[k], parts[k]]) for k in parts}
            self._set(np.concatenate([self._ids, ids]), merged)
        else:
            self._set(ids, dict(parts))

    def get(self, ids: np.ndarray) -> dict[str, torch.Tensor]:
        """Encoded payloads of `ids`, in that order (all must be present)."""
        ids = np.asarray(ids, dtype=np.int64)
        pos = np.searchsorted(self._ids, ids)
        pos = np.minimum(pos, max(len(self._ids) - 1, 0))
        if len(ids) and (len(self._ids) == 0 or not np.array_equal(self._ids[pos], ids)):
            raise KeyError("feature cache: some requested ids are not cached; call fill() first")
        return codec.select(self._parts, torch.from_numpy(pos))


def fill(
    store: FeatureStore,
    ids: np.ndarray,
    images: np.ndarray,
    compute: Callable[[np.ndarray], torch.Tensor],
    dtype: str,
    batch_size: int = 64,
    shard_size: int = 512,
    progress: bool = True,
) -> int:
    """Compute and store features for the ids the cache lacks; returns how many were computed.

    `compute(images_batch) -> [B, *payload]` runs the backbone and gather. Shards are written every
    `shard_size` images, so an interrupted extraction keeps what it finished.
    """
    todo = store.missing(ids)
    if len(todo) == 0:
        return 0
    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc="backbone", unit="img", disable=not progress, file=sys.stderr)
    for start in range(0, len(todo), shard_size):
        chunk = todo[start : start + shard_size]
        encoded = []
        for b in range(0, len(chunk), batch_size):
            batch = chunk[b : b + batch_size]
            encoded.append(codec.encode(compute(images[batch]), dtype))
            bar.update(len(batch))
        store.add(chunk, {k: torch.cat([e[k] for e in encoded]) for k in encoded[0]})
    bar.close()
    return len(todo)
