"""The cloud backbone as one named Ray actor, shared by every edge client of a simulation.

The actor owns the FeatureService (frozen backbone + feature cache): it computes gathered
features once per image and serves them by image id. It reserves no CPU (`num_cpus=0`): Flower
sizes its client pool from the node's CPUs, and a reserved CPU would starve one client worker.
Where no actor is reachable (`flwr run`), clients read the same on-disk cache instead; the
server fills it before round 1, so no client ever builds a backbone.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from miet_fed.cloud.service import FeatureService
from miet_fed.cloud.tasks import TaskFeatures
from miet_fed.config import ModelConfig, RunConfig
from miet_fed.data import load_dataset
from miet_fed.errors import MietError
from miet_fed.plugins import load_plugins
from miet_fed.torch_device import cpu_threads


class BackboneServer:
    """Plain class; `start_actor` wraps it with `ray.remote`. Also usable in-process."""

    def __init__(
        self,
        model: ModelConfig,
        dataset: str | tuple[str, ...],
        cache_root: str,
        progress: bool,
        plugins: tuple[str, ...] = (),
    ) -> None:
        load_plugins(plugins)  # a plugin's dataset or gather, in this (actor) process too
        # Ray gives an actor with num_cpus=0 one intra-op thread (OMP_NUM_THREADS=1). It reserves
        # no CPU so that Flower's client pool keeps every core, but it extracts features before
        # round 1, when those cores are idle: let torch use them ($MIET_FED_THREADS may say fewer).
        torch.set_num_threads(cpu_threads())
        self.service: FeatureService | TaskFeatures
        if isinstance(dataset, str):
            ds = load_dataset(dataset)
            self.service = FeatureService(
                model, ds.images, ds.fingerprint, Path(cache_root), progress
            )
        else:  # a multi-task run: every task's dataset from one model
            datasets = [load_dataset(d) for d in dataset]
            self.service = TaskFeatures(model, datasets, Path(cache_root), progress)
        self._progress = (0, 0)  # (images computed, images to compute) of the running ensure
        self.service.on_progress = self._note

    def _note(self, done: int, total: int) -> None:
        self._progress = (done, total)

    def ensure(self, ids: np.ndarray) -> int:
        self._progress = (0, 0)
        return self.service.ensure(ids)

    def progress(self) -> tuple[int, int]:
        """(computed, to compute) of the extraction running now: the driver polls it through
        the actor's "progress" concurrency group while `ensure` runs, and draws the bar."""
        return self._progress

    def features(self, ids: np.ndarray, fmt: str = "") -> dict[str, torch.Tensor]:
        return self.service.features(ids, fmt)

    def cached(self, ids: np.ndarray, fmt: str = "") -> dict[str, torch.Tensor]:
        """Served from cache only: a miss means the server did not prepare this image."""
        missing = self.service.missing(ids)
        if len(missing):
            raise MietError(f"{len(missing)} images are not in the feature cache; run ensure first")
        return self.service.features(ids, fmt)

    def stats(self) -> dict[str, Any]:
        return self.service.stats()

    def reset_stats(self) -> None:
        self.service.reset_stats()


def actor_name(model: ModelConfig, dataset: str | tuple[str, ...], cache_root: str) -> str:
    """One backbone actor per (model settings, dataset, cache): reusable across runs."""
    import hashlib
    import json
    from dataclasses import asdict

    blob = json.dumps([asdict(model), dataset, cache_root], sort_keys=True).encode()
    return f"miet-fed-backbone-{hashlib.sha256(blob).hexdigest()[:12]}"


def start_actor(
    model: ModelConfig,
    dataset: str | tuple[str, ...],
    cache_root: str,
    run: RunConfig,
    name: str,
    namespace: str,
) -> Any:
    import importlib.util

    import ray

    # Fail here, clearly, if timm is missing. Not imported: a run on cached features never
    # needs it, and the import costs 2.4 s (the actor imports it where it builds the model).
    if importlib.util.find_spec("timm") is None:
        raise MietError("timm is not installed; run `make install` (or pip install timm)")
    # A killed actor is restarted by Ray and reloads the feature cache from disk (no recompute);
    # calls in flight when it died are retried.
    # With run.backbone_gpus > 0 Ray places the actor on a node with that many free GPUs and
    # makes them visible to it; model.device=auto then runs the backbone there.
    # "progress": one more thread, so the driver can ask how far an extraction is while the
    # default group (one call at a time) runs it.
    remote_cls = ray.remote(
        num_cpus=0,
        num_gpus=run.backbone_gpus,
        max_restarts=3,
        max_task_retries=3,
        concurrency_groups={PROGRESS_GROUP: 1},
    )(BackboneServer)
    options: dict[str, Any] = {"name": name, "namespace": namespace}
    if run.ray_address:  # on a user's cluster: detached, so the next run of a sweep reuses it
        options |= {"lifetime": "detached", "get_if_exists": True}
    # No bar inside the actor: Ray would forward each of its updates as a new line.
    return remote_cls.options(**options).remote(model, dataset, cache_root, False, run.plugins)


PROGRESS_GROUP = "progress"


def ensure_with_bar(actor: Any, ids: np.ndarray, show: bool, poll: float = 0.5) -> int:
    """The actor computes the features the cache lacks among `ids`; this (the driver) process
    draws one updating bar from the actor's progress, polled every `poll` seconds. Returns the
    number of images computed."""
    import ray

    ref = actor.ensure.remote(ids)
    bar = None
    try:
        while True:
            ready, _ = ray.wait([ref], timeout=poll)
            if show:
                try:
                    asked = actor.progress.options(concurrency_group=PROGRESS_GROUP).remote()
                    done, total = ray.get(asked, timeout=10 * poll)
                except Exception:  # noqa: BLE001 - a bar is not worth failing the run for
                    done = total = 0
                if total and bar is None:
                    from tqdm import tqdm

                    bar = tqdm(total=total, desc="backbone", unit="img", file=sys.stderr)
                if bar is not None and done > bar.n:
                    bar.update(done - bar.n)
            if ready:
                break
    finally:
        if bar is not None:
            bar.close()
    return ray.get(ref)


#: Payload bytes a node process keeps between rounds (`MIET_FED_NODE_CACHE_MB`): a device's
#: payloads are fetched from the backbone once per run, not every round it trains.
NODE_CACHE_MB = int(os.environ.get("MIET_FED_NODE_CACHE_MB", "2048"))


class FeatureSource:
    """What a client or the server calls to get payloads: the actor if reachable, else the disk.
    One source per payload format (`fmt`, a planned device's format; '' = the cached one)."""

    def __init__(self, actor: Any | None, local: BackboneServer | None, fmt: str = "") -> None:
        self._actor, self._local, self.fmt = actor, local, fmt
        self._table: dict[str, torch.Tensor] = {}  # kept payloads, one row per image
        self._row = np.full(0, -1, dtype=np.int64)  # image id -> its row in the table, or -1
        self._used = 0  # rows of the table in use
        self._warmed = False
        self.fetched = 0  # images fetched by this process (a measure of refetching)

    def _nbytes(self) -> int:
        return sum(v[: self._used].numel() * v.element_size() for v in self._table.values())

    def _add(self, ids: np.ndarray, block: dict[str, torch.Tensor], exact: bool = False) -> None:
        """Append `block` (the payloads of distinct `ids`); the table grows by half (amortized
        copies), or to exactly what is needed when the caller knows it is the last add."""
        n = len(ids)
        if self._used + n > (len(next(iter(self._table.values()))) if self._table else 0):
            cap = self._used + n + (0 if exact else self._used // 2 + 64)
            grown = {k: v.new_empty((cap, *v.shape[1:])) for k, v in block.items()}
            for k, v in self._table.items():
                grown[k][: self._used] = v[: self._used]
            self._table = grown
        for k, v in block.items():
            self._table[k][self._used : self._used + n] = v
        top = int(ids.max()) + 1
        if top > len(self._row):
            self._row = np.concatenate([self._row, np.full(top - len(self._row), -1, np.int64)])
        self._row[ids] = np.arange(self._used, self._used + n)
        self._used += n
        self.fetched += n

    def _lacking(self, ids: np.ndarray) -> np.ndarray:
        """The distinct ids among `ids` that the table does not hold."""
        ids = np.unique(ids)
        known = ids < len(self._row)
        have = np.zeros(len(ids), dtype=bool)
        have[known] = self._row[ids[known]] >= 0
        return ids[~have]

    def _ensure(self, ids: np.ndarray, warm: np.ndarray | None) -> None:
        """Fetch what the table lacks of `ids` (one backbone call, however many devices they
        belong to); on the first call also `warm` (every image of the run, device after device)
        if it fits, then lay the rows out in that order."""
        limit = NODE_CACHE_MB << 20
        missing = self._lacking(ids)
        if len(missing):
            if self._nbytes() > limit:  # start over rather than grow without bound
                self._table, self._row, self._used = {}, np.full(0, -1, np.int64), 0
                missing = np.unique(ids)
            self._add(missing, self.features(missing))
        if warm is not None and not self._warmed and self._used:
            self._warmed = True
            warm = np.asarray(warm, dtype=np.int64)
            rest = self._lacking(warm)
            if self._nbytes() / self._used * (self._used + len(rest)) <= limit:
                if len(rest):
                    self._add(rest, self.features(rest), exact=True)
                self._reorder(warm)

    def kept(self, ids: np.ndarray, warm: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        """Payloads of `ids` as one block, fetched once per process and kept (up to
        NODE_CACHE_MB) in one table, so a node never refetches, even when Flower runs it in
        another worker process."""
        ids = np.asarray(ids, dtype=np.int64)
        if not len(ids):
            return self.features(ids)
        self._ensure(ids, warm)
        index = torch.from_numpy(self._row[ids])
        return {k: v.index_select(0, index) for k, v in self._table.items()}

    def kept_parts(
        self, parts: list[np.ndarray], warm: np.ndarray | None = None
    ) -> list[dict[str, torch.Tensor]]:
        """`kept` of each part (a device's train or test ids): a part whose rows are one
        contiguous range of the table (every part, once the table is laid out in the run's
        device order) is a view of it, not a copy; only the others are gathered."""
        parts = [np.asarray(q, dtype=np.int64) for q in parts]
        ids = np.concatenate([*parts, np.zeros(0, np.int64)])
        if len(ids):
            self._ensure(ids, warm)
        table = self._table or self.features(ids[:0])  # an empty table still has the keys
        out = []
        for q in parts:
            if not len(q):
                out.append({k: v[:0] for k, v in table.items()})
                continue
            rows = self._row[q]
            if np.all(np.diff(rows) == 1):  # one contiguous range: a view
                out.append({k: v[rows[0] : rows[-1] + 1] for k, v in table.items()})
            else:
                index = torch.from_numpy(rows)
                out.append({k: v.index_select(0, index) for k, v in table.items()})
        return out

    def _reorder(self, order: np.ndarray) -> None:
        """Lay the rows out in `order` (distinct ids), once: each device's ids then form one
        contiguous range. Left as it is if the table holds images `order` does not name."""
        if len(order) != self._used or np.any(self._row[order] < 0):
            return
        perm = torch.from_numpy(self._row[order])
        self._table = {k: v[: self._used].index_select(0, perm) for k, v in self._table.items()}
        self._row[order] = np.arange(len(order))

    def features(self, ids: np.ndarray) -> dict[str, torch.Tensor]:
        if self._actor is not None:
            import ray

            return ray.get(self._actor.features.remote(ids, self.fmt))
        return self._local.cached(ids, self.fmt)

    def ensure(self, ids: np.ndarray) -> int:
        """Compute what the cache lacks (the server calls this once, before round 1)."""
        if self._actor is not None:
            import ray

            return ray.get(self._actor.ensure.remote(ids))
        return self._local.ensure(ids)

    def kill(self) -> None:
        """Kill the actor and let Ray restart it (fault-injection tests)."""
        if self._actor is not None:
            import ray

            ray.kill(self._actor, no_restart=False)

    def stats(self) -> dict[str, Any]:
        if self._actor is not None:
            import ray

            return ray.get(self._actor.stats.remote())
        return self._local.stats()

    @property
    def via_actor(self) -> bool:
        return self._actor is not None


@lru_cache(maxsize=16)
def feature_source(spec_path: str, fmt: str = "") -> FeatureSource:
    """Per process, run and payload format: find the named backbone actor, or fall back to
    the on-disk cache."""
    from miet_fed.federation.spec import load_spec

    spec = load_spec(spec_path)
    try:
        import ray

        if ray.is_initialized():
            return FeatureSource(ray.get_actor(spec.actor, namespace=spec.namespace), None, fmt)
    except ValueError:
        pass
    if fmt:  # one on-disk reader for every format of the run
        return FeatureSource(None, feature_source(spec_path)._local, fmt)
    cfg = spec.config
    datasets = tuple(t.dataset for t in spec.tasks) or cfg.data.dataset
    local = BackboneServer(cfg.model, datasets, spec.cache_root, False)
    return FeatureSource(None, local)
