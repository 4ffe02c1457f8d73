"""On-disk cache of gathered features, one entry per image, so the backbone runs once per image.

Layout: `<cache>/features/<key digest>/key.json` plus shards `shard-*.safetensors`, each holding
the image ids it covers and the encoded payload (the bytes the edge would receive). The key holds
everything that changes the features (model, weights digest, image size, dataset fingerprint,
gather, k, dtype), so a cache entry can never be served for the wrong setting.

What a shard's bytes prove is what decides its fate:

* each shard records its key's digest and a sha256 of its tensors and that digest; a shard of
  another key (copied or moved in by hand) is never served: it is moved aside (`foreign-*`);
* a shard whose header does not parse (truncated, empty) or whose checksum fails is damaged: it
  is deleted and its images recomputed;
* an error of the machine while reading (an I/O error, a vanished mount, out of memory) says
  nothing about the shard: it is kept, and the run stops with one line.

Only the shards that hold images a run asks for are read in full; the others are indexed by their
`ids` tensor alone (a few bytes each), so a run on 100 images of a 100,000-image cache reads
those 100 images' shards.
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
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from miet_fed.comm import codec
from miet_fed.errors import MietError
from miet_fed.files import atomic_write, write_text

CACHE_VERSION = 2  # 2: shards bound to their key (version-1 folders are left alone, unread)


def key_digest(key: dict) -> str:
    blob = json.dumps({**key, "version": CACHE_VERSION}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def _tensor_digest(tensors: dict[str, torch.Tensor], key: str = "") -> str:
    h = hashlib.sha256(key.encode())
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(name.encode())
        if t.numel():  # the tensor's own buffer: no copy of a shard's hundreds of MB
            h.update(t.view(torch.uint8).reshape(-1).numpy())
    return h.hexdigest()


class _Damaged(Exception):
    """The shard's own bytes prove it unusable."""


class _Foreign(Exception):
    """A valid shard of another cache key."""


def _read_failed(shard: Path, exc: BaseException) -> MietError:
    if isinstance(exc, MemoryError):
        size = shard.stat().st_size / 2**20 if shard.exists() else 0
        why = f"out of memory reading {size:.0f} MB"
        fix = "free memory, or lower model.batch_size for new shards"
    else:
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        fix = "check the disk, or point MIET_FED_CACHE at another folder"
    return MietError(f"cannot read the feature cache shard {shard} ({why}); it was kept; {fix}")


class FeatureStore:
    """Gathered features of one key, per image id, read from disk shard by shard as needed."""

    def __init__(self, root: Path, key: dict) -> None:
        self.key = dict(key)
        self.digest = key_digest(key)
        self.dir = Path(root) / "features" / self.digest
        self.discarded: list[str] = []  # shards a checksum or header proved damaged: deleted
        self.rejected: list[str] = []  # valid shards of another key: moved aside
        self.shards_read: list[str] = []  # shards read in full (the rest: their ids only)
        self._index: dict[Path, np.ndarray] = {}  # shard -> the image ids it holds
        self._loaded: set[Path] = set()
        self._ids = np.zeros(0, dtype=np.int64)
        self._parts: dict[str, torch.Tensor] = {}
        self._scan()

    def __len__(self) -> int:
        """Images on disk for this key (indexed; not necessarily read yet)."""
        if not self._index and not len(self._ids):
            return 0
        return len(np.unique(np.concatenate([self._ids, *self._index.values()])))

    # --- reading ---------------------------------------------------------------------------

    def _scan(self) -> None:
        """Index new shards by their ids tensor alone (another process may have added some)."""
        if not self.dir.is_dir():
            return
        damaged, foreign = [], []
        for shard in sorted(self.dir.glob("shard-*.safetensors")):
            if shard in self._index:
                continue
            try:
                with safe_open(str(shard), framework="pt") as f:
                    meta = f.metadata() or {}
                    if "ids" not in f.keys():  # noqa: SIM118 - safe_open has no __contains__
                        raise _Damaged
                    ids = f.get_tensor("ids")
                if meta.get("key") != self.digest:
                    raise _Foreign
                self._index[shard] = ids.numpy().astype(np.int64)
            except FileNotFoundError:
                if shard.is_symlink():
                    raise _read_failed(shard, FileNotFoundError("dangling link")) from None
                continue  # removed by a concurrent run since the glob
            except (SafetensorError, _Damaged):
                damaged.append(shard)
            except _Foreign:
                foreign.append(shard)
            except (OSError, MemoryError) as exc:
                raise _read_failed(shard, exc) from None
        self._drop(damaged, foreign)

    def _drop(self, damaged: list[Path], foreign: list[Path]) -> None:
        for shard in damaged:
            shard.unlink(missing_ok=True)
            self.discarded.append(shard.name)
        for shard in foreign:
            os.replace(shard, shard.with_name(f"foreign-{shard.name}"))
            self.rejected.append(shard.name)
        if damaged:
            print(
                f"feature cache: discarded {len(damaged)} damaged shard(s) in {self.dir}; "
                "their images will be recomputed",
                file=sys.stderr,
            )
        if foreign:
            print(
                f"feature cache: {len(foreign)} shard(s) in {self.dir} belong to another "
                "dataset or setting; moved aside as foreign-*, not used",
                file=sys.stderr,
            )

    def _read(self, shard: Path) -> dict[str, torch.Tensor]:
        try:
            with safe_open(str(shard), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
        except SafetensorError:
            raise _Damaged from None
        except (OSError, MemoryError) as exc:
            raise _read_failed(shard, exc) from None
        if meta.get("key") != self.digest:
            raise _Foreign
        if meta.get("sha256") != _tensor_digest(tensors, self.digest) or "ids" not in tensors:
            raise _Damaged
        return tensors

    def _load_for(self, ids: np.ndarray) -> None:
        """Read in full the shards that hold any of `ids` and are not read yet."""
        self._scan()
        want = [
            s
            for s, held in self._index.items()
            if s not in self._loaded and np.isin(held, ids).any()
        ]
        damaged, foreign, new_ids, new_parts = [], [], [], []
        for shard in want:
            try:
                tensors = self._read(shard)
            except _Damaged:
                damaged.append(shard)
            except _Foreign:
                foreign.append(shard)
            else:
                self._loaded.add(shard)
                self.shards_read.append(shard.name)
                new_ids.append(tensors.pop("ids").numpy().astype(np.int64))
                new_parts.append(tensors)
                continue
            del self._index[shard]
        self._drop(damaged, foreign)
        if new_ids:
            self._merge(
                np.concatenate(new_ids),
                {k: torch.cat([p[k] for p in new_parts]) for k in new_parts[0]},
            )

    def _merge(self, ids: np.ndarray, parts: dict[str, torch.Tensor]) -> None:
        if len(self._ids):
            parts = {k: torch.cat([self._parts[k], parts[k]]) for k in parts}
            ids = np.concatenate([self._ids, ids])
        ids, first = np.unique(ids, return_index=True)  # drop duplicates from concurrent writers
        self._ids = ids
        if not np.array_equal(first, np.arange(len(first))):  # else already in order: no copy
            parts = {k: v[torch.from_numpy(first)] for k, v in parts.items()}
        self._parts = parts

    def missing(self, ids: np.ndarray) -> np.ndarray:
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        self._load_for(ids)
        return ids[~np.isin(ids, self._ids)]

    # --- writing ---------------------------------------------------------------------------

    def _write(self, ids: np.ndarray, parts: dict[str, torch.Tensor]) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        key_file = self.dir / "key.json"
        if not key_file.exists():
            write_text(key_file, json.dumps(self.key, indent=1, sort_keys=True))
        tensors = {
            "ids": torch.from_numpy(ids.copy()),
            **{k: v.contiguous() for k, v in parts.items()},
        }
        name = f"shard-{uuid.uuid4().hex[:16]}.safetensors"
        meta = {"sha256": _tensor_digest(tensors, self.digest), "key": self.digest}
        atomic_write(self.dir / name, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
        return name

    def add(self, ids: np.ndarray, parts: dict[str, torch.Tensor]) -> None:
        """Persist one shard atomically (temp file + rename), then extend the in-memory table."""
        ids = np.asarray(ids, dtype=np.int64)
        try:
            name = self._write(ids, parts)
        except (OSError, SafetensorError) as exc:  # a full disk, a read-only cache
            why = getattr(exc, "strerror", None) or exc
            raise MietError(
                f"cannot write the feature cache in {self.dir} ({why}); free "
                "space or make it writable, or point MIET_FED_CACHE at another folder"
            ) from None
        self._index[self.dir / name] = ids
        self._loaded.add(self.dir / name)
        self._merge(ids, dict(parts))

    def get(self, ids: np.ndarray) -> dict[str, torch.Tensor]:
        """Encoded payloads of `ids`, in that order (all must be present)."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) and not np.isin(ids, self._ids).all():
            self._load_for(np.unique(ids))
        pos = np.searchsorted(self._ids, ids)
        pos = np.minimum(pos, max(len(self._ids) - 1, 0))
        if len(ids) and (len(self._ids) == 0 or not np.array_equal(self._ids[pos], ids)):
            raise KeyError("feature cache: some requested ids are not cached; call fill() first")
        return codec.select(self._parts, torch.from_numpy(pos))


#: Decoded bytes one backbone batch of raw images may take (float32, 3 channels, before the
#: resize): large images are batched by bytes, not only by `model.batch_size`, so memory stays
#: bounded whatever their size.
BATCH_BYTES = 256 << 20


def batch_for(images: np.ndarray, batch_size: int, budget: int | None = None) -> int:
    """Images per backbone batch: `batch_size`, fewer when their float32 RGB copies would
    take more than `budget` bytes (at least one)."""
    budget = BATCH_BYTES if budget is None else budget
    per_image = 4 * 3 * int(np.prod(images.shape[1:3])) if len(images) else 1
    return max(1, min(batch_size, budget // max(1, per_image)))


def fill(
    store: FeatureStore,
    ids: np.ndarray,
    images: np.ndarray,
    compute: Callable[[np.ndarray], torch.Tensor],
    dtype: str,
    batch_size: int = 64,
    shard_size: int = 512,
    progress: bool = True,
    report: Callable[[int, int], None] | None = None,
) -> int:
    """Compute and store features for the ids the cache lacks; returns how many were computed.

    `compute(images_batch) -> [B, *payload]` runs the backbone and gather. Shards are written every
    `shard_size` images, so an interrupted extraction keeps what it finished. `report(done,
    total)` is called after every batch (the Ray actor passes its progress on to the driver,
    which draws the bar).
    """
    todo = store.missing(ids)
    if len(todo) == 0:
        return 0
    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc="backbone", unit="img", disable=not progress, file=sys.stderr)
    batch_size = batch_for(images, batch_size)
    done = 0
    for start in range(0, len(todo), shard_size):
        chunk = todo[start : start + shard_size]
        encoded = []
        for b in range(0, len(chunk), batch_size):
            batch = chunk[b : b + batch_size]
            encoded.append(codec.encode(compute(images[batch]), dtype))
            bar.update(len(batch))
            done += len(batch)
            if report is not None:
                report(done, len(todo))
        store.add(chunk, {k: torch.cat([e[k] for e in encoded]) for k in encoded[0]})
    bar.close()
    return len(todo)
