"""The feature cache: computed once per image, keyed by settings, damaged shards rebuilt."""

from __future__ import annotations

import numpy as np
import torch

from miet_fed.cloud.cache import FeatureStore, fill
from miet_fed.comm import codec

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
    assert len(fresh.discarded) == 2 and len(fresh) == 0
    assert "discarded 2 damaged shard" in capsys.readouterr().err
    assert fill(fresh, np.arange(8), _images(), compute, "fp32", progress=False) == 8


def test_int8_roundtrip_and_bytes():
    x = torch.randn(5, 7, 16)
    parts = codec.encode(x, "int8")
    assert codec.nbytes(parts) == 5 * (7 * 16 + 7 * 4)
    err = (codec.decode(parts) - x).abs().max() / x.abs().max()
    assert err < 0.01
