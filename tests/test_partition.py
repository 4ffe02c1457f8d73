"""Federation partitions: flwr-datasets partitioners on an in-memory pool, local splits, table."""

from __future__ import annotations

import numpy as np
import pytest

from miet_fed.errors import MietError
from miet_fed.federation import partition as pt
from miet_fed.federation.partition import (
    PARTITIONERS,
    ClientData,
    make_clients,
    partition_ids,
    partition_table,
    split_clients,
)

NUM_CLASSES = 10


@pytest.fixture(scope="module")
def pool():
    """A dataset of 3000 images with balanced labels; the pool is 2000 of its ids (not 0..n-1)."""
    rng = np.random.default_rng(0)
    labels = np.arange(3000) % NUM_CLASSES
    ids = np.sort(rng.choice(3000, size=2000, replace=False)).astype(np.int64)
    return ids, labels


def _parts(pool, method, seed=0, num_clients=20, alpha=0.5, k=2, **kw):
    ids, labels = pool
    return partition_ids(ids, labels[ids], num_clients, method, alpha, k, seed, **kw)


def _top_class_fraction(parts, labels):
    """Mean over clients of the share of the client's most common class."""
    return float(np.mean([np.bincount(labels[p]).max() / len(p) for p in parts]))


# ---------------------------------------------------------------- partition_ids


@pytest.mark.parametrize("method", PARTITIONERS)
def test_partitions_cover_pool_once_and_are_seeded(pool, method):
    ids, _ = pool
    parts = _parts(pool, method)
    assert len(parts) == 20
    for p in parts:
        assert p.dtype == np.int64 and len(p) > 0
        assert np.all(np.diff(p) > 0)  # sorted, no duplicates within a client
    flat = np.concatenate(parts)
    assert len(flat) == len(ids)  # disjoint ...
    assert np.array_equal(np.sort(flat), ids)  # ... and the union is the pool

    again = _parts(pool, method)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = _parts(pool, method, seed=1)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


@pytest.mark.parametrize("method", PARTITIONERS)
def test_fast_path_matches_load_partition(pool, method, monkeypatch):
    """Reading the partitioner's own map gives what its public load_partition gives."""
    fast = _parts(pool, method)
    monkeypatch.setattr(pt, "_internal_assignment", lambda partitioner, n: None)
    slow = _parts(pool, method)
    assert all(np.array_equal(a, b) for a, b in zip(fast, slow, strict=True))


def test_iid_is_balanced_and_mixed(pool):
    ids, labels = pool
    parts = _parts(pool, "iid")
    assert {len(p) for p in parts} == {100}
    # Rows are shuffled before the (contiguous) IID shards: clients are not runs of ids.
    assert all(p.max() - p.min() > len(ids) for p in parts)
    assert _top_class_fraction(parts, labels) < 0.3


def test_dirichlet_small_alpha_skews_labels(pool):
    _, labels = pool
    iid = _top_class_fraction(_parts(pool, "iid"), labels)
    skewed = _top_class_fraction(_parts(pool, "dirichlet", alpha=0.1), labels)
    flat = _top_class_fraction(_parts(pool, "dirichlet", alpha=1000.0), labels)
    assert iid < 0.3 and flat < 0.3
    assert skewed > 0.5
    assert skewed > 2 * iid


def test_pathological_gives_at_most_k_classes(pool):
    _, labels = pool
    for k in (1, 2, 3):
        parts = _parts(pool, "pathological", k=k)
        counts = [len(np.unique(labels[p])) for p in parts]
        assert max(counts) <= k
        assert max(counts) == k


def test_dirichlet_min_size_is_met(pool):
    parts = _parts(pool, "dirichlet", alpha=0.3, min_size=30)
    assert min(len(p) for p in parts) >= 30


def test_1000_clients_over_10000_ids():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, NUM_CLASSES, size=10_000)
    ids = np.arange(10_000, dtype=np.int64)
    parts = partition_ids(ids, labels, 1000, "iid", 1.0, 1, 0)
    assert {len(p) for p in parts} == {10}
    assert np.array_equal(np.sort(np.concatenate(parts)), ids)
    clients = split_clients(parts, labels, 0.2, 1, 0, 0)
    assert len(clients) == 1000


# ---------------------------------------------------------------- split_clients


def test_split_clients_sizes_disjoint_deterministic(pool):
    ids, labels = pool
    parts = _parts(pool, "dirichlet", alpha=0.5, min_size=10)
    clients = split_clients(parts, labels, 0.2, 1, 1, seed=3)
    assert [c.client for c in clients] == list(range(20))
    for c, p in zip(clients, parts, strict=True):
        assert isinstance(c, ClientData)
        assert c.train.dtype == np.int64 and c.test.dtype == np.int64
        assert len(np.intersect1d(c.train, c.test)) == 0
        assert np.array_equal(np.sort(np.concatenate([c.train, c.test])), p)
        assert np.all(np.diff(c.train) > 0) and np.all(np.diff(c.test) > 0)
        assert len(c.test) == min(round(0.2 * len(p)), len(p) - len(np.unique(labels[p])))
        # Every class on the client keeps a training image; the test set holds no new class.
        assert set(labels[c.test]) <= set(labels[c.train]) == set(labels[p])

    again = split_clients(parts, labels, 0.2, 1, 1, seed=3)
    assert all(np.array_equal(a.test, b.test) for a, b in zip(clients, again, strict=True))
    other = split_clients(parts, labels, 0.2, 1, 1, seed=4)
    assert not all(np.array_equal(a.test, b.test) for a, b in zip(clients, other, strict=True))
    # Seeded per client: a client's split does not depend on the clients after it.
    head = split_clients(parts[:5], labels, 0.2, 1, 1, seed=3)
    assert all(np.array_equal(a.test, b.test) for a, b in zip(head, clients, strict=False))


def test_split_is_stratified_and_singletons_train():
    labels = np.array([0] * 50 + [1] * 50 + [2])
    (c,) = split_clients([np.arange(101)], labels, 0.2, 1, 1, seed=0)
    assert len(c.test) == 20
    assert np.bincount(labels[c.test], minlength=3).tolist() == [10, 10, 0]
    assert 100 in c.train
    (c,) = split_clients([np.arange(101)], labels, 0.0, 1, 0, seed=0)
    assert len(c.test) == 0 and len(c.train) == 101


def test_split_too_small_client_names_it():
    labels = np.arange(100) % 5
    parts = [np.arange(0, 50), np.arange(50, 52)]
    with pytest.raises(MietError, match=r"client 1 has 2 images .*fed\.num_clients.*alpha.*iid"):
        split_clients(parts, labels, 0.2, 2, 1, seed=0)
    parts = [np.arange(0, 50), np.arange(50, 53)]
    with pytest.raises(MietError, match=r"client 1 has 3 images \(2 train"):
        split_clients(parts, labels, 0.2, 4, 0, seed=0)


# ---------------------------------------------------------------- make_clients, table


def test_make_clients_and_table(pool):
    ids, labels = pool
    clients = make_clients(ids, labels, 20, "dirichlet", 0.5, 2, 0.2, 2, 1, 0)
    assert len(clients) == 20
    assert all(len(c.train) >= 2 and len(c.test) >= 1 for c in clients)
    everything = np.sort(np.concatenate([np.concatenate([c.train, c.test]) for c in clients]))
    assert np.array_equal(everything, ids)

    table = partition_table(clients, labels, NUM_CLASSES)
    labels_cols = [f"label_{k}" for k in range(NUM_CLASSES)]
    assert list(table.columns) == ["client", "n_train", "n_test", *labels_cols]
    assert table["client"].tolist() == list(range(20))
    assert (table[labels_cols].sum(axis=1) == table["n_train"] + table["n_test"]).all()
    assert table[["n_train", "n_test"]].to_numpy().sum() == len(ids)
    assert table[labels_cols].sum(axis=0).tolist() == np.bincount(labels[ids]).tolist()
    first = clients[0]
    hist = np.bincount(labels[np.concatenate([first.train, first.test])], minlength=NUM_CLASSES)
    assert table.loc[0, labels_cols].tolist() == hist.tolist()


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "shards"}, r"unknown partition 'shards'; use one of: iid, dirichlet, path"),
        ({"num_clients": 0}, r"fed\.num_clients must be >= 1, got 0"),
        ({"num_clients": 2001}, r"2001 is more than the 2000 images"),
        ({"method": "dirichlet", "alpha": 0.0}, r"fed\.alpha must be > 0"),
        ({"method": "dirichlet", "alpha": -1.0}, r"fed\.alpha must be > 0"),
        ({"method": "pathological", "k": 0}, r"classes_per_client must be in 1\.\.10"),
        ({"method": "pathological", "k": 11}, r"classes_per_client must be in 1\.\.10"),
    ],
)
def test_bad_arguments(pool, kwargs, message):
    args = {"method": "iid", "num_clients": 20, "alpha": 0.5, "k": 2} | kwargs
    with pytest.raises(MietError, match=message):
        _parts(pool, **args)


def test_dirichlet_that_cannot_meet_min_size(pool):
    with pytest.raises(MietError, match=r"dirichlet partition .*larger fed\.alpha.*fewer fed"):
        _parts(pool, "dirichlet", num_clients=500, alpha=0.05, min_size=2)


def test_pathological_impossible_and_unused_classes(pool):
    # 1000 clients x 10 classes each: every class on 1000 clients, but each has only ~200 images.
    with pytest.raises(MietError, match=r"pathological partition cannot split .*fewer fed"):
        _parts(pool, "pathological", num_clients=1000, k=10)
    # 3 clients x 2 classes cannot hold 10 classes: images would be silently dropped.
    with pytest.raises(MietError, match=r"gives classes \[.*\] to no client .*>= 10"):
        _parts(pool, "pathological", num_clients=3, k=2)


def test_empty_partition(pool):
    # min_size=0 lets the dirichlet partitioner leave a client with nothing.
    with pytest.raises(MietError, match=r"left client \d+ with no images"):
        _parts(pool, "dirichlet", num_clients=200, alpha=0.01, min_size=0)


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_bad_test_fraction(pool, fraction):
    ids, labels = pool
    with pytest.raises(MietError, match=r"fed\.test_fraction must be in \[0, 1\)"):
        split_clients([ids], labels, fraction, 1, 1, 0)
    with pytest.raises(MietError, match=r"fed\.test_fraction must be in \[0, 1\)"):
        make_clients(ids, labels, 4, "iid", 1.0, 1, fraction, 1, 1, 0)


def test_make_clients_too_small_clients(pool):
    ids, labels = pool
    with pytest.raises(MietError, match=r"client \d+ has \d+ images .*fed\.partition=iid"):
        make_clients(ids[:100], labels, 50, "iid", 1.0, 1, 0.2, 2, 1, 0)


def test_errors_are_one_line(pool):
    cases = [
        lambda: _parts(pool, "dirichlet", num_clients=500, alpha=0.05, min_size=2),
        lambda: _parts(pool, "pathological", num_clients=1000, k=10),
        lambda: _parts(pool, "pathological", num_clients=3, k=2),
    ]
    for case in cases:
        with pytest.raises(MietError) as info:
            case()
        assert "\n" not in str(info.value)


def test_tiny_client_still_gets_one_test_image():
    labels = np.arange(100) % 5
    (small,) = split_clients([np.array([50, 51, 52])], labels, 0.2, 2, 1, seed=0)
    assert len(small.train) == 2 and len(small.test) == 1


def test_validation_is_held_out_of_each_devices_training_images():
    from miet_fed.errors import MietError
    from miet_fed.federation.partition import hold_out_val, make_clients

    labels = np.arange(400) % 4
    clients = make_clients(np.arange(400), labels, 5, "iid", 0.3, 2, 0.2, 2, 1, seed=3)
    held = hold_out_val(clients, labels, 0.25, 2, seed=3)
    assert hold_out_val(clients, labels, 0.0, 2, seed=3) is clients  # 0: as they were
    for before, after in zip(clients, held, strict=True):
        assert np.array_equal(after.test, before.test)  # the test split is untouched
        assert np.array_equal(np.sort(np.concatenate([after.train, after.val])), before.train)
        assert len(after.val) == round(0.25 * len(before.train))
        assert set(labels[after.val]) == set(labels[before.train])  # stratified
    again = hold_out_val(clients, labels, 0.25, 2, seed=3)
    assert all(np.array_equal(a.val, b.val) for a, b in zip(held, again, strict=True))
    with pytest.raises(MietError, match="fed.val_fraction=0.9 leaves device 0"):
        hold_out_val(clients, labels, 0.9, 70, seed=3)
