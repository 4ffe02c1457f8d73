"""`backbone_service`: images/s through the Ray backbone actor vs a plain in-process forward."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.jobs import REAL, TINY, sim_config
from benchmarks.machine import apply_threads
from benchmarks.report import Report, median, ratio
from miet_fed.units import human_bytes

DESCRIPTION = (
    "Feature extraction rate through the production path (ray.init, `start_actor` with a fresh "
    "cache directory, `ensure(ids)` then `features(ids)` transferred to the driver) vs the same "
    "timm model's batched `CloudBackbone.gathered` forward in the driver process, on the same "
    "number of images. Start-up (ray.init, actor creation, backbone build, one warm-up batch) "
    "is excluded from the rates and reported separately."
)

SIZES = {
    "quick": {"model": TINY, "images": 64, "repeats": 1},
    "default": {"model": REAL, "images": 256, "repeats": 2},
    "large": {"model": REAL, "images": 512, "repeats": 3},
}
ACTOR = "miet-fed-bench-backbone"


def _plain(backbone: Any, gather: Any, k: int, images: np.ndarray, batch: int) -> float:
    """Seconds to push `images` through the backbone in batches (inference mode)."""
    t0 = time.perf_counter()
    for b in range(0, len(images), batch):
        backbone.gathered(images[b : b + batch], gather, k)
    return time.perf_counter() - t0


def _worker_threads() -> tuple[int, str | None]:
    """torch threads and OMP_NUM_THREADS in a Ray actor with the backbone actor's resources."""
    import ray

    @ray.remote(num_cpus=0)
    class Probe:
        def threads(self) -> tuple[int, str | None]:
            import torch

            return torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")

    probe = Probe.remote()
    out = ray.get(probe.threads.remote())
    ray.kill(probe)
    return out


def run(size: str, work: Path) -> Report:
    import ray

    from miet_fed.cloud.backbone import build_backbone
    from miet_fed.cloud.gather import get_gather
    from miet_fed.config import ModelConfig
    from miet_fed.data import load_dataset
    from miet_fed.federation.actor import start_actor
    from miet_fed.federation.runner import _init_ray
    from miet_fed.federation.spec import NAMESPACE

    s = SIZES[size]
    model = ModelConfig(**s["model"])
    ds = load_dataset("animal-mnist")
    n, reps, batch = s["images"], s["repeats"], model.batch_size
    warm_ids = np.arange(batch)
    blocks = [np.arange(batch + i * n, batch + (i + 1) * n) for i in range(reps)]
    rep = Report("backbone_service", DESCRIPTION)
    rep.settings = {
        "model": model.name,
        "weights": model.weights,
        "img_size": model.img_size,
        "gather": model.gather,
        "k": model.k,
        "dtype": model.dtype,
        "batch_size": batch,
        "images_per_repeat": n,
        "repeats": reps,
    }
    f: dict[str, Any] = {"driver_torch_threads": apply_threads()}

    # Plain process: build, one warm-up batch, then the timed blocks (interleaved below).
    t0 = time.perf_counter()
    backbone = build_backbone(model.name, model.weights, model.img_size)
    gather = get_gather(model.gather)
    f["plain_build_seconds"] = time.perf_counter() - t0
    f["plain_warmup_seconds"] = _plain(backbone, gather, model.k, ds.images[warm_ids], batch)

    # Actor path: exactly what `miet-fed simulate` starts (its own ray.init settings).
    run_cfg = sim_config(["run.progress=false"])
    t0 = time.perf_counter()
    _init_ray(run_cfg)
    f["ray_init_seconds"] = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        actor = start_actor(
            model,
            "animal-mnist",
            str(work / "actor-cache"),
            run_cfg.run,
            ACTOR,
            NAMESPACE,
        )
        ray.get(actor.stats.remote())
        f["actor_ready_seconds"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        ray.get(actor.ensure.remote(warm_ids))  # builds the backbone inside the actor
        ray.get(actor.features.remote(warm_ids))
        f["actor_warmup_seconds"] = time.perf_counter() - t0
        f["actor_startup_seconds"] = (
            f["ray_init_seconds"] + f["actor_ready_seconds"] + f["actor_warmup_seconds"]
        )
        f["actor_torch_threads"], f["actor_omp_num_threads"] = _worker_threads()

        plain_t, plain1_t, ensure_t, transfer_t, nbytes = [], [], [], [], 0
        for i, ids in enumerate(blocks):
            order = ("plain", "plain1", "actor") if i % 2 == 0 else ("actor", "plain1", "plain")
            for what in order:
                if what == "plain":
                    plain_t.append(_plain(backbone, gather, model.k, ds.images[ids], batch))
                    continue
                if what == "plain1":  # same, one torch thread: what the actor gets from Ray
                    before = torch.get_num_threads()
                    torch.set_num_threads(1)
                    try:
                        plain1_t.append(_plain(backbone, gather, model.k, ds.images[ids], batch))
                    finally:
                        torch.set_num_threads(before)
                    continue
                t0 = time.perf_counter()
                computed = ray.get(actor.ensure.remote(ids))
                t1 = time.perf_counter()
                parts = ray.get(actor.features.remote(ids))
                t2 = time.perf_counter()
                assert computed == len(ids), "the actor's fresh cache already held these images"
                ensure_t.append(t1 - t0)
                transfer_t.append(t2 - t1)
                nbytes = sum(v.numel() * v.element_size() for v in parts.values())
        stats = ray.get(actor.stats.remote())
    finally:
        ray.shutdown()

    actor_t = [a + b for a, b in zip(ensure_t, transfer_t, strict=True)]
    f |= {
        "plain_seconds": plain_t,
        "actor_ensure_seconds": ensure_t,
        "actor_transfer_seconds": transfer_t,
        "plain_images_per_second": n / median(plain_t),
        "plain_1thread_seconds": plain1_t,
        "plain_1thread_images_per_second": n / median(plain1_t),
        "actor_images_per_second": n / median(actor_t),
        "actor_ensure_images_per_second": n / median(ensure_t),
        "transfer_mib_per_second": nbytes / 2**20 / median(transfer_t),
        "transfer_bytes_per_repeat": nbytes,
        "actor_backbone_forwards": stats["backbone_forwards"],
    }
    f["actor_over_plain"] = ratio(f["actor_images_per_second"], f["plain_images_per_second"])
    f["actor_over_plain_1thread"] = ratio(
        f["actor_images_per_second"], f["plain_1thread_images_per_second"]
    )
    rep.figures = f
    rep.rows = [
        {
            "path": "plain forward in the driver",
            "images/s": f["plain_images_per_second"],
            "start-up s": f["plain_build_seconds"] + f["plain_warmup_seconds"],
            "torch threads": f["driver_torch_threads"],
        },
        {
            "path": "plain forward in the driver, 1 torch thread",
            "images/s": f["plain_1thread_images_per_second"],
            "torch threads": 1,
        },
        {
            "path": "actor: ensure + features to driver",
            "images/s": f["actor_images_per_second"],
            "start-up s": f["actor_startup_seconds"],
            "torch threads": f["actor_torch_threads"],
        },
        {
            "path": "actor: ensure only",
            "images/s": f["actor_ensure_images_per_second"],
        },
    ]
    q = f["actor_over_plain"]
    rep.check("actor / plain images/s", q, ">= 0.9", None if q is None else q >= 0.9)
    rep.check(
        "actor / plain (1 thread) images/s", f["actor_over_plain_1thread"], "(reported)", None
    )
    rep.notes += [
        f"Rates: median over {reps} block(s) of {n} distinct images, plain and actor "
        "alternating first; the 1-thread plain row separates Ray's thread setting from the "
        "actor's own overhead; the actor's cache is fresh, so every image is a backbone forward "
        "plus a shard write, then a transfer of the encoded payload "
        f"({human_bytes(nbytes)} per block) to the driver.",
        f"Actor start-up = ray.init {f['ray_init_seconds']:.1f} s + actor ready "
        f"{f['actor_ready_seconds']:.1f} s + first batch incl. backbone build "
        f"{f['actor_warmup_seconds']:.1f} s. A num_cpus=0 Ray actor runs torch with "
        f"{f['actor_torch_threads']} thread(s) (OMP_NUM_THREADS={f['actor_omp_num_threads']}), "
        f"the driver with {f['driver_torch_threads']}.",
    ]
    return rep
