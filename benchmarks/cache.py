"""`cache`: a FeatureService extraction on a cold cache vs the same request on a warm one."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from benchmarks.jobs import REAL, TINY
from benchmarks.report import Report, median, ratio
from miet_fed.units import human_bytes

DESCRIPTION = (
    "Wall time of `FeatureService.features(ids)` with a cold feature cache (fresh directory: "
    "backbone build, forwards, shard writes) vs a warm one (a new FeatureService on the same "
    "directory: shard load, sha256 check, lookup), and the backbone forwards each needed."
)

SIZES = {
    "quick": {"model": TINY, "images": 128, "warm_repeats": 2},
    "default": {"model": REAL, "images": 512, "warm_repeats": 3},
    "large": {"model": REAL, "images": 2000, "warm_repeats": 5},
}


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run(size: str, work: Path) -> Report:
    from miet_fed.cloud.service import FeatureService
    from miet_fed.config import ModelConfig
    from miet_fed.data import load_dataset

    s = SIZES[size]
    model = ModelConfig(**s["model"])
    ds = load_dataset("animal-mnist")
    ids = np.arange(s["images"])
    root = work / "cache"
    rep = Report("cache", DESCRIPTION)
    rep.settings = {
        "model": model.name,
        "weights": model.weights,
        "img_size": model.img_size,
        "gather": model.gather,
        "k": model.k,
        "dtype": model.dtype,
        "images": len(ids),
        "warm_repeats": s["warm_repeats"],
    }

    c0 = time.perf_counter()
    cold = FeatureService(model, ds.images, ds.fingerprint, root, progress=False)
    c1 = time.perf_counter()
    _ = cold.backbone  # built lazily on the first miss: part of a cold extraction
    c2 = time.perf_counter()
    parts = cold.features(ids)
    c3 = time.perf_counter()
    cold_s = c3 - c0

    warm_times, warm_forwards, identical = [], [], True
    for _ in range(s["warm_repeats"]):
        t0 = time.perf_counter()
        warm = FeatureService(model, ds.images, ds.fingerprint, root, progress=False)
        got = warm.features(ids)
        warm_times.append(time.perf_counter() - t0)
        warm_forwards.append(warm.forwards)
        identical &= all(np.array_equal(got[k].numpy(), parts[k].numpy()) for k in parts)
    warm_s = median(warm_times)
    disk = _dir_bytes(root)
    shutil.rmtree(root, ignore_errors=True)

    rep.figures = {
        "cold_seconds": cold_s,
        "cold_service_seconds": c1 - c0,
        "cold_backbone_build_seconds": c2 - c1,
        "cold_features_seconds": c3 - c2,
        "cold_forwards": cold.forwards,
        "cold_images_per_second": len(ids) / (c3 - c2),
        "warm_seconds_median": warm_s,
        "warm_seconds_all": warm_times,
        "warm_forwards": max(warm_forwards),
        "warm_images_per_second": ratio(len(ids), warm_s),
        "cold_over_warm": ratio(cold_s, warm_s),
        "warm_payload_identical": identical,
        "cache_bytes_on_disk": disk,
        "bytes_per_image": cold.bytes_per_image,
    }
    rep.rows = [
        {
            "cache": "cold",
            "seconds": cold_s,
            "backbone forwards": cold.forwards,
            "images/s": len(ids) / cold_s,
        },
        {
            "cache": "warm (median)",
            "seconds": warm_s,
            "backbone forwards": max(warm_forwards),
            "images/s": ratio(len(ids), warm_s),
        },
    ]
    rep.check("warm backbone forwards", max(warm_forwards), "== 0", max(warm_forwards) == 0)
    rep.check("warm payload == cold payload", identical, "identical", identical)
    speedup = ratio(cold_s, warm_s)
    rep.check(
        "cold / warm wall time",
        speedup,
        ">= 10 (proposed)",
        None if speedup is None else speedup >= 10,
    )
    rep.notes.append(
        f"cold = new FeatureService + backbone build ({c2 - c1:.2f} s) + forwards and shard "
        f"writes; warm = median of {s['warm_repeats']} new FeatureServices on the same directory "
        f"({human_bytes(disk)} on disk)."
    )
    return rep
