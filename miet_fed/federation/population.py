"""A population larger than the pool: each device holds `fed.device_images` images drawn from it.

Splitting a 1,000-image pool among 100,000 devices leaves most with nothing. Federated
simulators model such populations as many small users drawing from one distribution; here each
device draws its own few images from the pool (seeded per run and device), so devices may share
images (the cloud computes each image's payload once; each device still uploads and downloads
its own copy, and the ledger counts it per device). Label skew follows `fed.partition`: iid
draws uniformly, dirichlet draws the device's class mix from Dirichlet(fed.alpha), pathological
gives it `fed.classes_per_client` classes.
"""

from __future__ import annotations

import math

import numpy as np

from miet_fed.errors import MietError
from miet_fed.federation.partition import ClientData


def sample_population(
    ids: np.ndarray,
    labels: np.ndarray,
    num_devices: int,
    images: int,
    method: str,
    alpha: float,
    classes_per_client: int,
    test_fraction: float,
    min_train: int,
    seed: int,
) -> list[ClientData]:
    """`num_devices` devices of about `images` distinct pool images each (drawn by class with
    replacement across devices, duplicates within a device removed), split train/test."""
    ids = np.asarray(ids, dtype=np.int64)
    n_test = max(1, math.floor(images * test_fraction))
    if images - n_test < min_train:
        raise MietError(
            f"fed.device_images={images} leaves {images - n_test} training images per device "
            f"(fed.test_fraction={test_fraction}); use fed.device_images >= {min_train + n_test} "
            "or a smaller fed.min_train"
        )
    pool_labels = labels[ids]
    classes = np.unique(pool_labels)
    by_class = [ids[pool_labels == c] for c in classes]
    c = len(classes)
    if method == "pathological" and not 1 <= classes_per_client <= c:
        raise MietError(
            f"fed.classes_per_client must be in 1..{c} (the pool's classes), got "
            f"{classes_per_client}"
        )
    rng = np.random.default_rng(np.random.SeedSequence([seed, num_devices, images]))
    if method == "iid":
        mix = np.tile(np.array([len(b) for b in by_class], float), (num_devices, 1))
    elif method == "dirichlet":
        mix = rng.dirichlet(np.full(c, float(alpha)), size=num_devices)
    else:
        mix = np.zeros((num_devices, c))
        for d in range(num_devices):
            mix[d, rng.choice(c, size=classes_per_client, replace=False)] = 1.0
    mix = mix / mix.sum(1, keepdims=True)
    # Class of each drawn image, then an image of that class (vectorised over all devices).
    u = rng.random((num_devices, images))
    drawn_class = (u[:, :, None] > np.cumsum(mix, axis=1)[:, None, :]).sum(-1).clip(max=c - 1)
    sizes = np.array([len(b) for b in by_class])
    pick = (rng.random((num_devices, images)) * sizes[drawn_class]).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    flat = np.concatenate(by_class)[starts[drawn_class] + pick]
    devices = []
    for d in range(num_devices):
        own = np.unique(flat[d])
        own = own[rng.permutation(len(own))]
        test = np.sort(own[:n_test])
        train = np.sort(own[n_test:])
        if len(train) < min_train:  # duplicates removed left too few: top up from the pool
            extra = np.setdiff1d(ids, own)[: min_train - len(train)]
            train = np.sort(np.concatenate([train, extra]))
        devices.append(ClientData(client=d, train=train, test=test))
    return devices
