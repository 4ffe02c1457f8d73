"""Split the federation's image pool among clients, then each client's share into train/test.

The assignment of images to clients comes from flwr-datasets partitioners (the same ones Flower
baselines use), run on an in-memory `datasets.Dataset` of image ids and labels, so no download and
no hub. Everything is seeded: the same seed gives the same clients in every process.

Label conventions: `partition_ids` takes labels aligned with its ids (labels[i] belongs to ids[i]);
`make_clients`, `split_clients` and `partition_table` take the dataset's full label array, indexed
by image id.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from miet_fed.data.selection import stratified_sample
from miet_fed.errors import MietError

if TYPE_CHECKING:
    import pandas

PARTITIONERS = ("iid", "dirichlet", "pathological")

# Fixes suggested whenever clients come out too small (config keys, so the user can act on them).
_FIX = "use fewer fed.num_clients, a larger data.n_train, a larger fed.alpha, or fed.partition=iid"


@dataclass(frozen=True, eq=False)
class ClientData:
    """One client's images: sorted int64 image ids, train and test disjoint."""

    client: int  # 0..num_clients-1
    train: np.ndarray  # local training split
    test: np.ndarray  # local test split (personal evaluation)
    val: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # fed.val_fraction


def _check_partition_args(
    n: int, num_classes: int, num_clients: int, method: str, alpha: float, classes_per_client: int
) -> None:
    """User errors caught before any partitioner runs, so each gets a one-line fix."""
    if method not in PARTITIONERS:
        raise MietError(f"unknown partition {method!r}; use one of: {', '.join(PARTITIONERS)}")
    if num_clients < 1:
        raise MietError(f"fed.num_clients must be >= 1, got {num_clients}")
    if num_clients > n:
        raise MietError(
            f"fed.num_clients={num_clients} is more than the {n} images in the federation pool; "
            f"use fed.num_clients <= {n} or a larger data.n_train"
        )
    if method == "dirichlet" and not alpha > 0:
        raise MietError(f"fed.alpha must be > 0 for the dirichlet partition, got {alpha}")
    if method == "pathological" and not 1 <= classes_per_client <= num_classes:
        raise MietError(
            f"fed.classes_per_client must be in 1..{num_classes} (the pool's classes) for the "
            f"pathological partition, got {classes_per_client}"
        )


def _partitioner(
    method: str, num_clients: int, alpha: float, classes_per_client: int, min_size: int, seed: int
) -> Any:
    """The flwr-datasets partitioner for `method` (shuffle off: we sort each client's ids)."""
    from flwr_datasets.partitioner import (
        DirichletPartitioner,
        IidPartitioner,
        PathologicalPartitioner,
    )

    if method == "iid":
        return IidPartitioner(num_partitions=num_clients)
    if method == "dirichlet":
        return DirichletPartitioner(
            num_partitions=num_clients,
            partition_by="label",
            alpha=float(alpha),
            min_partition_size=min_size,
            self_balancing=False,
            shuffle=False,
            seed=seed,
        )
    # "first-deterministic" (the original paper's mode): client i always holds class i mod C, so
    # every class is used as soon as there are at least as many clients as classes.
    return PathologicalPartitioner(
        num_partitions=num_clients,
        partition_by="label",
        num_classes_per_partition=classes_per_client,
        class_assignment_mode="first-deterministic",
        shuffle=False,
        seed=seed,
    )


def _internal_assignment(partitioner: Any, num_clients: int) -> list[np.ndarray] | None:
    """Row positions per client from the partitioner's own precomputed map, or None.

    Dirichlet and pathological partitioners compute the whole assignment once and keep it in
    `_partition_id_to_indices`; `load_partition` then only runs `Dataset.select` on it, which
    costs ~1 ms per client. Reading the map is the same assignment without that cost; the tests
    check it against `load_partition`, and anything unexpected falls back to the public API.
    """
    mapping = getattr(partitioner, "_partition_id_to_indices", None)
    if not isinstance(mapping, dict) or sorted(mapping) != list(range(num_clients)):
        return None
    return [np.asarray(mapping[i], dtype=np.int64) for i in range(num_clients)]


def partition_ids(
    ids: np.ndarray,
    labels: np.ndarray,
    num_clients: int,
    method: str,
    alpha: float,
    classes_per_client: int,
    seed: int,
    *,
    min_size: int = 1,
) -> list[np.ndarray]:
    """Split the pool's image ids among clients with a flwr-datasets partitioner.

    `labels[i]` is the label of `ids[i]`. The rows are shuffled with `seed` first: IidPartitioner
    takes contiguous shards and has no seed, and the others cut each class in row order, so
    without it clients would get runs of neighbouring ids. `min_size` is the dirichlet
    partitioner's min_partition_size (it redraws up to 10 times to reach it). Returns one sorted
    int64 array of ids per client; together they cover the pool exactly once.
    """
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(ids):
        raise ValueError(f"labels ({len(labels)}) must align with ids ({len(ids)})")
    if len(np.unique(ids)) != len(ids):
        raise ValueError("ids must be unique")
    classes = np.unique(labels)
    _check_partition_args(len(ids), len(classes), num_clients, method, alpha, classes_per_client)

    import datasets

    order = np.random.default_rng(seed).permutation(len(ids))
    row_ids, row_labels = ids[order], labels[order].astype(np.int64)
    partitioner = _partitioner(method, num_clients, alpha, classes_per_client, min_size, seed)
    partitioner.dataset = datasets.Dataset.from_dict({"id": row_ids, "label": row_labels})
    try:
        with warnings.catch_warnings():
            # Dirichlet warns on every redraw and pathological on unused classes; both are
            # turned into MietErrors below when they matter.
            warnings.simplefilter("ignore")
            partitioner.num_partitions  # noqa: B018 - computes the assignment (or raises)
            rows = _internal_assignment(partitioner, num_clients)
            if rows is None:
                parts = [
                    np.asarray(partitioner.load_partition(i)["id"], dtype=np.int64)
                    for i in range(num_clients)
                ]
            else:
                parts = [row_ids[r] for r in rows]
    except ValueError as e:
        if method == "dirichlet":
            what = f"could not give each of {num_clients} clients {min_size}+ images"
            fix = "try a larger fed.alpha, fewer fed.num_clients, or a larger data.n_train"
        else:
            what = f"cannot split {len(ids)} images among {num_clients} clients"
            fix = "try fewer fed.num_clients or fed.classes_per_client, or a larger data.n_train"
        reason = str(e).strip().split(". ")[0].split("\n")[0].rstrip(".") or repr(e)
        raise MietError(f"{method} partition {what}: {fix} (flwr-datasets: {reason})") from e

    parts = [np.sort(p) for p in parts]
    sizes = [len(p) for p in parts]
    if min(sizes) == 0:
        raise MietError(f"{method} partition left client {sizes.index(0)} with no images; {_FIX}")
    if sum(sizes) != len(ids):
        covered = np.concatenate(parts)
        missing = np.setdiff1d(ids, covered)
        if len(missing) and method == "pathological":
            unused = np.unique(labels[np.isin(ids, missing)]).tolist()
            raise MietError(
                f"pathological partition gives classes {unused} to no client "
                f"({len(missing)} images unused); use fed.num_clients >= {len(classes)} "
                f"(the number of classes) or a larger fed.classes_per_client"
            )
        raise RuntimeError(f"{method} partition does not cover the pool exactly once")
    return parts


def _check_split_args(test_fraction: float, min_train: int, min_test: int) -> None:
    if not 0 <= test_fraction < 1:
        raise MietError(f"fed.test_fraction must be in [0, 1), got {test_fraction}")
    if min_train < 0 or min_test < 0:
        raise MietError(f"min_train and min_test must be >= 0, got {min_train} and {min_test}")


def _split_one(
    ids: np.ndarray, labels: np.ndarray, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One client's ids -> (train, test), both sorted int64.

    One random image of every class with >= 2 images is kept for training, as is every image of a
    single-image class; the test set is a stratified sample of round(test_fraction * n) (at least
    one) of the rest, so a class is test-only only on clients too small to avoid it.
    """
    own = labels[ids]
    classes, inverse, counts = np.unique(own, return_inverse=True, return_counts=True)
    keep = np.zeros(len(ids), dtype=bool)
    for c in range(len(classes)):
        members = np.flatnonzero(inverse == c)
        keep[members if counts[c] == 1 else rng.choice(members, size=1)] = True
    spare = np.flatnonzero(~keep)
    want = int(np.floor(test_fraction * len(ids) + 0.5))
    if test_fraction > 0 and len(ids) >= 2:
        want = max(want, 1)  # a tiny client still gets one test image for personal evaluation
    n_test = min(want, len(spare))
    is_test = np.zeros(len(ids), dtype=bool)
    if n_test:
        is_test[spare[stratified_sample(own[spare], n_test, rng)]] = True
    if want > n_test:  # too few spare images: take the rest from the kept ones, at random
        kept = np.flatnonzero(keep)
        is_test[rng.choice(kept, size=min(want - n_test, len(kept) - 1), replace=False)] = True
    return np.sort(ids[~is_test]), np.sort(ids[is_test])


def split_clients(
    parts: list[np.ndarray],
    labels: np.ndarray,
    test_fraction: float,
    min_train: int,
    min_test: int,
    seed: int,
) -> list[ClientData]:
    """Each client's ids -> a local train/test split, for personal evaluation.

    `labels` is indexed by image id. Each client's split is seeded from (seed, client), so it does
    not depend on how many clients there are. A client left with fewer than `min_train` train or
    `min_test` test images is a MietError at start-up rather than a crash mid-run.
    """
    _check_split_args(test_fraction, min_train, min_test)
    labels = np.asarray(labels).reshape(-1)
    clients = []
    for client, ids in enumerate(parts):
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        rng = np.random.default_rng((seed, client))
        train, test = _split_one(ids, labels, test_fraction, rng)
        if len(train) < min_train or len(test) < min_test:
            raise MietError(
                f"client {client} has {len(ids)} images ({len(train)} train, {len(test)} test) "
                f"but needs at least {min_train} train and {min_test} test; {_FIX}"
            )
        clients.append(ClientData(client=client, train=train, test=test))
    return clients


def hold_out_val(
    clients: list[ClientData], labels: np.ndarray, val_fraction: float, min_train: int, seed: int
) -> list[ClientData]:
    """`fed.val_fraction` of each device's training images held out for validation (stratified,
    seeded per device as the test split is): per-round accuracy is measured on them, and the
    test split only once, after the last round. 0 leaves the clients as they are."""
    if not val_fraction:
        return clients
    out = []
    for c in clients:
        rng = np.random.default_rng((seed, c.client, 1))
        train, val = _split_one(c.train, labels, val_fraction, rng)
        if len(train) < min_train or not len(val):
            raise MietError(
                f"fed.val_fraction={val_fraction:g} leaves device {c.client} {len(train)} "
                f"training and {len(val)} validation images of its {len(c.train)}; use a "
                f"smaller fed.min_train ({min_train}), fewer devices or a larger pool"
            )
        out.append(replace(c, train=train, val=val))
    return out


def make_clients(
    ids: np.ndarray,
    labels: np.ndarray,
    num_clients: int,
    method: str,
    alpha: float,
    classes_per_client: int,
    test_fraction: float,
    min_train: int,
    min_test: int,
    seed: int,
) -> list[ClientData]:
    """The federation's clients: `partition_ids` then `split_clients`.

    `ids` is the pool (e.g. the data.n_train selection); `labels` is the dataset's full label
    array, indexed by image id. Dirichlet redraws until every client has min_train + min_test
    images, a necessary condition for the split to meet both minimums.
    """
    _check_split_args(test_fraction, min_train, min_test)
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if len(ids) and (ids.min() < 0 or ids.max() >= len(labels)):
        raise ValueError(f"ids must be image ids in 0..{len(labels) - 1}")
    parts = partition_ids(
        ids,
        labels[ids],
        num_clients,
        method,
        alpha,
        classes_per_client,
        seed,
        min_size=max(1, min_train + min_test),
    )
    return split_clients(parts, labels, test_fraction, min_train, min_test, seed)


def partition_table(
    clients: list[ClientData], labels: np.ndarray, num_classes: int
) -> pandas.DataFrame:
    """One row per client: client, n_train, n_test, label_0..label_{C-1} (train+test counts).

    Saved with every run so a result can be read against how skewed its clients were.
    """
    import pandas as pd

    labels = np.asarray(labels).reshape(-1)
    rows = []
    for c in clients:
        hist = np.bincount(labels[np.concatenate([c.train, c.test])], minlength=num_classes)
        if len(hist) > num_classes:
            raise ValueError(f"client {c.client} has labels >= num_classes={num_classes}")
        row = {"client": c.client, "n_train": len(c.train), "n_test": len(c.test)}
        row.update({f"label_{k}": int(v) for k, v in enumerate(hist)})
        rows.append(row)
    columns = ["client", "n_train", "n_test"] + [f"label_{k}" for k in range(num_classes)]
    return pd.DataFrame(rows, columns=columns)
