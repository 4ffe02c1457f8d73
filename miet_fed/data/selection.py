"""Train/test selection in the VTAB-1K spirit: a small, class-stratified, seeded training set."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from miet_fed.errors import MietError


@dataclass(frozen=True, eq=False)
class Split:
    """Sorted int64 indices into a dataset; train and test are disjoint."""

    train: np.ndarray
    test: np.ndarray


def _quotas(counts: np.ndarray, n: int) -> np.ndarray:
    """Per-class sample sizes summing to n, proportional to counts (largest remainder).

    When n >= number of classes every class gets at least one (so a rare class is never silently
    absent from a small training set); only then can a count stray more than 1 from its share.
    """
    exact = counts * (n / counts.sum())
    quotas = np.floor(exact).astype(np.int64)
    short = n - int(quotas.sum())
    if short:
        # Stable sort: ties go to the lower class index, so the result is deterministic.
        order = np.argsort(-(exact - quotas), kind="stable")
        quotas[order[:short]] += 1
    if n >= len(counts):
        for c in np.flatnonzero(quotas == 0):
            # Donor: the class furthest above its exact share among those that can spare one.
            excess = np.where(quotas >= 2, quotas - exact, -np.inf)
            donor = int(np.argmax(excess))
            quotas[donor] -= 1
            quotas[c] += 1
    return quotas


def stratified_sample(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n positions into `labels`, class proportions preserved; sorted int64."""
    labels = np.asarray(labels)
    if not 0 <= n <= len(labels):
        raise ValueError(f"cannot sample {n} of {len(labels)} items")
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    quotas = _quotas(counts, n)
    picked = [
        rng.choice(np.flatnonzero(inverse == c), size=int(q), replace=False)
        for c, q in enumerate(quotas)
        if q
    ]
    if not picked:
        return np.empty(0, dtype=np.int64)
    return np.sort(np.concatenate(picked)).astype(np.int64)


def vtab_split(
    labels: np.ndarray, n_train: int = 1000, n_test: int | None = 1000, seed: int = 0
) -> Split:
    """VTAB-1K-like split: n_train stratified training images, test drawn from the rest.

    Test is a seeded stratified sample of n_test of the remaining images, or all of them when
    n_test is None or exceeds what remains.
    """
    labels = np.asarray(labels).reshape(-1)
    if n_train < 1:
        raise MietError(f"n_train must be at least 1, got {n_train}")
    if n_train >= len(labels):
        raise MietError(
            f"n_train={n_train} leaves no test images: the dataset has {len(labels)} images; "
            f"use n_train <= {max(len(labels) - 1, 1)}"
        )
    if n_test is not None and n_test < 1:
        raise MietError(f"n_test must be at least 1 (or None for all the rest), got {n_test}")
    rng = np.random.default_rng(seed)
    train = stratified_sample(labels, n_train, rng)
    rest = np.setdiff1d(np.arange(len(labels), dtype=np.int64), train, assume_unique=True)
    if n_test is None or n_test >= len(rest):
        test = rest
    else:
        test = rest[stratified_sample(labels[rest], n_test, rng)]
    return Split(train=train, test=np.sort(test).astype(np.int64))
