"""Train/val/test selection in the VTAB-1K spirit: a small, class-stratified, seeded training set,
optionally with a validation part held out of it (VTAB-1K: 800 train + 200 val of 1000)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from miet_fed.errors import MietError


@dataclass(frozen=True, eq=False)
class Split:
    """Sorted int64 indices into a dataset; train, val and test are disjoint. `val` is empty when
    no validation was asked for (simulate's devices hold out their own test part instead)."""

    train: np.ndarray
    test: np.ndarray
    val: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))


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


def class_sequence(counts: np.ndarray, n: int) -> np.ndarray:
    """The class of each of the first n picks, so that every prefix is stratified.

    Every class with images gets one pick first (largest classes first), then each pick goes to
    the class furthest below its exact share among those below their upper quota. Because the
    sequence is fixed, the picks for a smaller n are a prefix of those for a larger n: a smoke
    run reuses a bigger run's images.
    """
    counts = np.asarray(counts, dtype=np.int64)
    share = counts / counts.sum()
    taken = np.zeros(len(counts), dtype=np.int64)
    seq = np.empty(n, dtype=np.int64)
    first = [int(c) for c in np.argsort(-counts, kind="stable") if counts[c] > 0]
    for m in range(n):
        if m < len(first):
            c = first[m]
        else:
            deficit = (m + 1) * share - taken
            # Balinski-Young's quota rule: never above a class's upper quota, so every prefix
            # stays within one image of its exact share (beyond the forced first picks).
            ok = (taken < counts) & (deficit > 0)
            c = int(np.argmax(np.where(ok if ok.any() else taken < counts, deficit, -np.inf)))
        seq[m] = c
        taken[c] += 1
    return seq


def _take(
    classes: np.ndarray, order: list[np.ndarray], start: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """n images stratified by the counts left after `start`, each class in its seeded order."""
    left = np.array([len(o) for o in order], dtype=np.int64) - start
    picks = np.bincount(class_sequence(left, n), minlength=len(order)) if n else 0 * left
    chosen = [order[c][start[c] : start[c] + picks[c]] for c in range(len(order))]
    flat = np.concatenate(chosen) if chosen else np.empty(0, dtype=np.int64)
    return np.sort(flat).astype(np.int64), start + picks


def _held_out_quotas(counts: np.ndarray, n: int) -> np.ndarray:
    """Per-class validation sizes out of a selection with `counts` per class: stratified as
    `_quotas`, except that every class keeps at least one training image whenever the selection
    can spare n images that way (a class seen only in validation could never be learnt)."""
    quotas = _quotas(counts, n)
    cap = np.maximum(counts - 1, 0)
    if n > cap.sum():
        return quotas
    exact = counts * (n / counts.sum())
    over = int(np.maximum(quotas - cap, 0).sum())
    quotas = np.minimum(quotas, cap)
    for _ in range(over):  # each image given back goes to the class furthest below its share
        quotas[int(np.argmax(np.where(quotas < cap, exact - quotas, -np.inf)))] += 1
    return quotas


#: Mixed into the run seed for the validation draw, so it is its own stream: the training
#: selection (and the cache it fills) is the same with and without validation.
_VAL_STREAM = 0x76616C  # "val"


def _hold_out(
    labels: np.ndarray, selected: np.ndarray, n_val: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train, val): n_val of the `selected` images, stratified by class, become validation."""
    rng = np.random.default_rng([seed, _VAL_STREAM])
    _, inverse, counts = np.unique(labels[selected], return_inverse=True, return_counts=True)
    quotas = _held_out_quotas(counts, n_val)
    is_val = np.zeros(len(selected), dtype=bool)
    for c, q in enumerate(quotas):
        if q:
            is_val[rng.choice(np.flatnonzero(inverse == c), size=int(q), replace=False)] = True
    return selected[~is_val], selected[is_val]


def vtab_split(
    labels: np.ndarray,
    n_train: int = 1000,
    n_test: int | None = 1000,
    seed: int = 0,
    n_val: int = 0,
) -> Split:
    """VTAB-1K-like split: n_train stratified training images, test drawn from the rest.

    Each class's images are shuffled once per seed; training takes a stratified prefix of every
    class and test the stratified next ones (or all the rest when n_test is None or exceeds what
    remains). So with the same seed, a smaller n_train selects a subset of a larger one's
    training images, and a small test set mostly images a larger run already used: shrinking a
    run for a quick try finds its features in the cache.

    n_val > 0 holds n_val of the n_train selected images out for validation (stratified, from
    the seed's own stream): train and val together are exactly the n_val=0 training selection,
    so the test images and the cached features are the same whatever n_val is.
    """
    labels = np.asarray(labels).reshape(-1)
    if n_train < 1:
        raise MietError(f"n_train must be at least 1, got {n_train}")
    if n_train >= len(labels):
        raise MietError(
            f"n_train={n_train} leaves no test images: the dataset has {len(labels)} images; "
            f"use n_train <= {max(len(labels) - 1, 1)}"
        )
    if n_val < 0:
        raise MietError(f"n_val must be at least 0 (0: no validation), got {n_val}")
    if n_val >= n_train:
        raise MietError(
            f"n_val={n_val} leaves no training images: validation is taken out of the "
            f"n_train={n_train} selected images; use n_val <= {n_train - 1} "
            "(VTAB-1K holds out 200 of 1000) or n_val=0 for no validation"
        )
    if n_test is not None and n_test < 1:
        raise MietError(f"n_test must be at least 1 (or None for all the rest), got {n_test}")
    rng = np.random.default_rng(seed)
    classes, inverse = np.unique(labels, return_inverse=True)
    order = [rng.permutation(np.flatnonzero(inverse == c)) for c in range(len(classes))]
    start = np.zeros(len(classes), dtype=np.int64)
    train, start = _take(classes, order, start, n_train)
    rest = len(labels) - n_train
    test, _ = _take(classes, order, start, rest if n_test is None else min(n_test, rest))
    if not n_val:
        return Split(train=train, test=test)
    train, val = _hold_out(labels, train, n_val, seed)
    return Split(train=train, test=test, val=val)
