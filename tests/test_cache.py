"""The feature cache: computed once per image, keyed by settings, damaged shards rebuilt."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from safetensors import safe_open

from miet_fed.cloud.cache import FeatureStore, fill
from miet_fed.comm import codec
from miet_fed.errors import MietError

KEY = {
    "model": "m",
    "weights": "w",
    "img_size": 8,
    "dataset": "d",
    "gather": "sum",
    "k": 2,
    "dtype": "fp16",
}


def _compute_counter():
    calls = []

    def compute(images: np.ndarray) -> torch.Tensor:
        calls.append(len(images))
        return torch.from_numpy(images.astype(np.float32)).reshape(len(images), 2, 3) / 7.0

    return compute, calls


def _images(n=40):
    return np.arange(n * 6, dtype=np.uint8).reshape(n, 6)


def test_fill_computes_once_then_serves(tmp_path):
    compute, calls = _compute_counter()
    store = FeatureStore(tmp_path, KEY)
    ids = np.array([3, 1, 7, 1, 30])
    assert fill(store, ids, _images(), compute, "fp16", batch_size=2, progress=False) == 4
    assert sum(calls) == 4
    # A second store on the same key (a second run) finds everything on disk.
    again = FeatureStore(tmp_path, KEY)
    assert fill(again, ids, _images(), compute, "fp16", progress=False) == 0
    assert sum(calls) == 4
    got = codec.decode(again.get(np.array([30, 3])))
    want = torch.from_numpy(_images()[[30, 3]].astype(np.float32)).reshape(2, 2, 3) / 7.0
    torch.testing.assert_close(got, want.half().float())


def test_only_missing_ids_are_computed(tmp_path):
    compute, calls = _compute_counter()
    store = FeatureStore(tmp_path, KEY)
    fill(store, np.arange(10), _images(), compute, "fp32", progress=False)
    assert fill(store, np.arange(15), _images(), compute, "fp32", progress=False) == 5
    assert sum(calls) == 15


def test_different_settings_do_not_share_entries(tmp_path):
    compute, _ = _compute_counter()
    fill(FeatureStore(tmp_path, KEY), np.arange(5), _images(), compute, "fp16", progress=False)
    other = FeatureStore(tmp_path, {**KEY, "k": 3})
    assert len(other) == 0 and len(other.missing(np.arange(5))) == 5


def test_damaged_shard_is_discarded_and_rebuilt(tmp_path, capsys):
    compute, calls = _compute_counter()
    store = FeatureStore(tmp_path, KEY)
    fill(store, np.arange(8), _images(), compute, "fp32", shard_size=4, progress=False)
    shards = sorted(store.dir.glob("shard-*.safetensors"))
    assert len(shards) == 2
    data = bytearray(shards[0].read_bytes())
    data[-3] ^= 0xFF  # flip bits inside the tensor bytes: loads fine, checksum must catch it
    shards[0].write_bytes(bytes(data))
    shards[1].write_bytes(shards[1].read_bytes()[:50])  # truncated
    fresh = FeatureStore(tmp_path, KEY)
    assert fresh.discarded == [shards[1].name]  # the header alone proves it truncated
    assert len(fresh.missing(np.arange(8))) == 8  # the checksum proves the other one damaged
    assert sorted(fresh.discarded) == sorted(s.name for s in shards)
    assert "damaged shard" in capsys.readouterr().err
    assert fill(fresh, np.arange(8), _images(), compute, "fp32", progress=False) == 8


def _three_shards(tmp_path, key=KEY):
    compute, calls = _compute_counter()
    store = FeatureStore(tmp_path, key)
    fill(store, np.arange(12), _images(), compute, "fp32", shard_size=4, progress=False)
    return store, calls


def _shard_of(store, image_id):
    for shard in store.dir.glob("shard-*.safetensors"):
        with safe_open(str(shard), framework="pt") as f:
            if image_id in f.get_tensor("ids").tolist():
                return shard
    raise AssertionError(image_id)


def test_only_the_shards_a_run_needs_are_read(tmp_path):
    """A run on images 0..3 reads their shard in full and never looks inside the others:
    a damaged shard it does not need is neither read nor deleted."""
    store, _ = _three_shards(tmp_path)
    far = _shard_of(store, 9)
    data = bytearray(far.read_bytes())
    data[-3] ^= 0xFF  # damage only a checksum can see
    far.write_bytes(bytes(data))
    fresh = FeatureStore(tmp_path, KEY)
    assert len(fresh.missing(np.arange(4))) == 0
    assert fresh.shards_read == [_shard_of(store, 0).name]
    assert codec.decode(fresh.get(np.arange(4))).shape[0] == 4
    assert far.exists() and fresh.discarded == []


def test_a_read_error_is_not_damage(tmp_path, capsys):
    """An I/O error (a vanished mount, a device error) keeps the shard and stops with one
    line; before, any error while loading deleted a valid shard."""
    store, _ = _three_shards(tmp_path)
    shard = _shard_of(store, 5)
    elsewhere = tmp_path / "mount" / "shard.safetensors"
    elsewhere.parent.mkdir()
    shard.rename(elsewhere)
    shard.symlink_to(elsewhere)  # the cache's shard lives on another mount
    elsewhere.parent.rename(tmp_path / "unmounted")  # ... which went away
    with pytest.raises(MietError, match="cannot read the feature cache shard") as info:
        FeatureStore(tmp_path, KEY).missing(np.arange(12))
    assert "\n" not in str(info.value) and "it was kept" in str(info.value)
    assert shard.is_symlink()  # not deleted
    (tmp_path / "unmounted").rename(elsewhere.parent)  # the mount is back: all served
    assert len(FeatureStore(tmp_path, KEY).missing(np.arange(12))) == 0


def test_a_shard_that_cannot_be_opened_is_kept(tmp_path):
    """ENODEV from the OS (here: a folder where a shard should be) is not damage either."""
    store, _ = _three_shards(tmp_path)
    odd = store.dir / "shard-0000000000000000.safetensors"
    odd.mkdir()
    with pytest.raises(MietError, match="cannot read the feature cache shard"):
        FeatureStore(tmp_path, KEY)
    assert odd.is_dir()


def test_a_valid_shard_of_another_key_is_never_served(tmp_path, capsys):
    """A shard of another dataset copied into this key's folder is moved aside, not served
    (before: its features were used for this dataset's images)."""
    compute, _ = _compute_counter()
    mine = FeatureStore(tmp_path, KEY)
    fill(mine, np.arange(4), _images(), compute, "fp32", progress=False)
    theirs = FeatureStore(tmp_path, {**KEY, "dataset": "another"})
    fill(theirs, np.arange(4, 8), _images() + 1, compute, "fp32", progress=False)
    copied = next(theirs.dir.glob("shard-*.safetensors"))
    shutil.copy(copied, mine.dir / copied.name)
    fresh = FeatureStore(tmp_path, KEY)
    assert list(fresh.missing(np.arange(8))) == [4, 5, 6, 7]
    assert fresh.rejected == [copied.name] and fresh.discarded == []
    assert (mine.dir / f"foreign-{copied.name}").exists()  # kept, out of the way
    assert "belong to another dataset" in capsys.readouterr().err


def test_int8_roundtrip_and_bytes():
    x = torch.randn(5, 7, 16)
    parts = codec.encode(x, "int8")
    assert codec.nbytes(parts) == 5 * (7 * 16 + 7 * 4)
    err = (codec.decode(parts) - x).abs().max() / x.abs().max()
    assert err < 0.01


def test_large_images_are_batched_by_bytes_not_only_by_count(tmp_path, monkeypatch):
    from miet_fed.cloud import cache

    images = np.zeros((5, 64, 64, 3), np.uint8)
    monkeypatch.setattr(cache, "BATCH_BYTES", 2 * 4 * 3 * 64 * 64)  # two float RGB copies
    calls = []

    def compute(x: np.ndarray) -> torch.Tensor:
        calls.append(len(x))
        return torch.zeros(len(x), 2, 3)

    fill(FeatureStore(tmp_path, KEY), np.arange(5), images, compute, "fp16", 64, progress=False)
    assert calls == [2, 2, 1]
    assert cache.batch_for(images, 64, budget=1) == 1  # never zero
    assert cache.batch_for(images, 3, budget=1 << 30) == 3  # small images: batch_size rules
