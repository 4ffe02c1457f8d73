"""Nested selection: a smaller run (same seed) uses images a larger run already used, so
shrinking a run for a quick try finds its features in the cache instead of recomputing them; and
tune's validation images, held out of the training selection."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from miet_fed.cli import main
from miet_fed.data.selection import class_sequence, vtab_split
from miet_fed.errors import MietError
from tests.conftest import TINY


def _labels(counts: list[int], seed: int = 42) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(len(counts)), counts))


@pytest.mark.parametrize(
    "counts", [[100] * 10, [300, 250, 200, 120, 90, 60, 40, 30, 20, 13], [1000, 1000, 3]]
)
@pytest.mark.parametrize("seed", [0, 7])
def test_smaller_n_train_is_a_subset_of_a_larger_one(counts: list[int], seed: int) -> None:
    labels = _labels(counts)
    sizes = [3, 10, 37, 100, 333, min(1000, len(labels) - 1)]
    splits = [vtab_split(labels, n, 50, seed) for n in sizes]
    for small, big in zip(splits, splits[1:], strict=False):
        assert set(small.train.tolist()) <= set(big.train.tolist())


def test_small_run_images_lie_inside_a_big_run() -> None:
    """A 100+100 smoke run on balanced data uses only images a 1000+1000 run used."""
    labels = _labels([1000] * 10)
    big, small = vtab_split(labels, 1000, 1000, 0), vtab_split(labels, 100, 100, 0)
    used = set(big.train.tolist()) | set(big.test.tolist())
    assert set(small.train.tolist()) | set(small.test.tolist()) <= used


def test_every_prefix_stays_within_one_image_of_its_share() -> None:
    counts = np.array([300, 250, 200, 120, 90, 60, 40, 30, 20, 13])
    seq = class_sequence(counts, int(counts.sum()))
    share = counts / counts.sum()
    for m in range(40, len(seq) + 1, 7):  # past the forced first picks of the small classes
        got = np.bincount(seq[:m], minlength=len(counts))
        assert np.all(np.abs(got - m * share) < 1 + 1e-9), m
    assert np.array_equal(np.bincount(seq), counts)  # the full sequence takes every image


def test_a_smaller_tune_run_hits_the_cache_of_a_larger_one(tiny_npz, capsys) -> None:
    def tune(n: int, out: str, n_val: int) -> dict:
        args = ["tune", "--dataset", f"npz:{tiny_npz}", *TINY, "--out", out, "--quiet"]
        args += ["--set", f"data.n_train={n}", "--set", f"data.n_test={n}", "--json"]
        args += ["--set", "train.epochs=1", "--set", f"data.n_val={n_val}"]
        assert main(args) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    big = tune(60, "results/big", 12)
    assert big["backbone_forwards"] == 120 and (big["n_train"], big["n_val"]) == (48, 12)
    assert tune(20, "results/small", 4)["backbone_forwards"] == 0
    # validation is held out of the same selection: without it, no new image is needed
    assert tune(60, "results/noval", 0)["backbone_forwards"] == 0


SKEWED = [300, 250, 200, 120, 90, 60, 40, 30, 20, 13]


@pytest.mark.parametrize("seed", [0, 7])
def test_without_validation_the_split_is_the_one_it_always_was(seed: int) -> None:
    """n_val=0 (simulate, and tune with data.n_val=0): the train and test images of the code
    before validation existed (digests taken from that code)."""
    split = vtab_split(_labels(SKEWED), 300, 100, seed)
    digest = hashlib.sha256(split.train.tobytes() + split.test.tobytes()).hexdigest()[:16]
    assert digest == {0: "f12d1696ec3c6005", 7: "96727e0e297f25fe"}[seed]
    assert split.val.dtype == np.int64 and len(split.val) == 0
    np.testing.assert_array_equal(
        vtab_split(_labels(SKEWED), 300, 100, seed, n_val=0).train, split.train
    )


@pytest.mark.parametrize("counts", [[100] * 10, SKEWED, [1000, 1000, 3]])
@pytest.mark.parametrize("seed", [0, 7])
def test_validation_is_a_stratified_part_of_the_training_selection(counts, seed) -> None:
    labels = _labels(counts)
    old = vtab_split(labels, 300, 100, seed)
    split = vtab_split(labels, 300, 100, seed, n_val=60)
    train, val, test = (set(a.tolist()) for a in (split.train, split.val, split.test))
    assert (len(train), len(val)) == (240, 60) and not train & val and not (train | val) & test
    assert train | val == set(old.train.tolist())  # the same images: cached features reused
    np.testing.assert_array_equal(split.test, old.test)
    for idx in (split.train, split.val):
        assert idx.dtype == np.int64 and np.all(np.diff(idx) > 0)
    selected = np.bincount(labels[old.train], minlength=len(counts))
    got = np.bincount(labels[split.val], minlength=len(counts))
    assert np.all(np.abs(got - 60 * selected / 300) < 1 + 1e-9), (got, selected)
    assert np.all(np.bincount(labels[split.train], minlength=len(counts)) >= 1)
    again = vtab_split(labels, 300, 100, seed, n_val=60)
    np.testing.assert_array_equal(again.val, split.val)  # seeded by the run seed


def test_validation_draw_follows_the_seed() -> None:
    labels = _labels([100] * 10)
    a, b = (vtab_split(labels, 300, 100, seed, n_val=60) for seed in (0, 1))
    assert not np.array_equal(a.val, b.val)


def test_a_rare_class_keeps_its_training_image() -> None:
    """A class with one selected image stays in training: validation cannot take it."""
    labels = _labels([100, 100, 2])
    split = vtab_split(labels, 20, 50, 0, n_val=5)
    assert np.bincount(labels[split.train], minlength=3)[2] >= 1
    assert len(split.val) == 5 and set(labels[split.val].tolist()) == {0, 1}


@pytest.mark.parametrize(
    ("n_val", "match"),
    [
        (50, "n_val=50 leaves no training images: validation is taken out of the n_train=50"),
        (60, "use n_val <= 49"),
        (-1, "n_val must be at least 0"),
    ],
)
def test_validation_that_leaves_no_training_images_is_refused(n_val: int, match: str) -> None:
    with pytest.raises(MietError, match=match):
        vtab_split(_labels([100] * 3), 50, 50, 0, n_val=n_val)
