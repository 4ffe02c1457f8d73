"""Nested selection: a smaller run (same seed) uses images a larger run already used, so
shrinking a run for a quick try finds its features in the cache instead of recomputing them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from miet_fed.cli import main
from miet_fed.data.selection import class_sequence, vtab_split
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
    def tune(n: int, out: str) -> dict:
        args = ["tune", "--dataset", f"npz:{tiny_npz}", *TINY, "--out", out, "--quiet"]
        args += ["--set", f"data.n_train={n}", "--set", f"data.n_test={n}", "--json"]
        args += ["--set", "train.epochs=1"]
        assert main(args) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    assert tune(60, "results/big")["backbone_forwards"] == 120
    assert tune(20, "results/small")["backbone_forwards"] == 0
