"""`miet-fed simulate`: one module that starts Ray and the backbone actor, runs the Flower
simulation, collects our own per-client rows, and writes the run folder atomically.
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from miet_fed.cloud.gather import get_gather
from miet_fed.cloud.service import payload_info
from miet_fed.config import SimulateConfig, nest, to_toml
from miet_fed.config.data import dataset_stem
from miet_fed.cpus import usable_cpus
from miet_fed.data import load_dataset, vtab_split
from miet_fed.edge.networks import check_pair
from miet_fed.errors import MietError
from miet_fed.federation import checkpoint
from miet_fed.federation.actor import actor_name
from miet_fed.federation.checkpoint import checkpointed
from miet_fed.federation.cohorts import num_nodes
from miet_fed.federation.collect import collect
from miet_fed.federation.logs import quiet_flower
from miet_fed.federation.partition import hold_out_val, partition_table
from miet_fed.federation.payload_plan import Plan, make_plan
from miet_fed.federation.population import sample_population
from miet_fed.federation.ray_setup import _init_ray, end_of_run, in_session, session_actor
from miet_fed.federation.spec import RunSpec
from miet_fed.federation.tasks import TaskData, load_tasks
from miet_fed.logging_hooks import check_tensorboard
from miet_fed.paths import cache_dir
from miet_fed.results import atomic_dir, run_identity, run_path, slug
from miet_fed.torch_device import cpu_threads

DEVICE_STATE = "devices"  # device store folder in the checkpoint (or, without one, the run tmp)
WORKER_RESTARTS = 10  # per ClientApp worker process (killed by the OOM killer, a segfault...)


def default_name(cfg: SimulateConfig) -> str:
    m, f = cfg.model, cfg.fed
    data = dataset_stem(cfg.data.dataset)
    if cfg.data.tasks:
        data = f"{len(cfg.data.tasks)}tasks"
    part = f.partition + (f"{f.alpha:g}" if f.partition == "dirichlet" else "")
    return slug(
        "simulate",
        data,
        f.strategy,
        f"n{f.num_clients}",
        part,
        m.gather,
        f"k{m.k}",
        m.dtype,
        cfg.edge.name,
        f"s{cfg.run.seed}",
        "plan" if cfg.plan.formats else "",
        run_identity("simulate", cfg)[:8],  # every other setting that changes the results
    )


def check_names(cfg: SimulateConfig) -> None:
    """What the config alone cannot check (each name was checked against its registry when the
    config was built): the pair of edge network and gather, and GPUs for cohorts."""
    check_pair(cfg.edge.name, get_gather(cfg.model.gather).kind)
    check_tensorboard(cfg.run.tensorboard)
    cpu_threads()  # a bad $MIET_FED_THREADS: a one-line error now, not a dead actor later
    if cfg.edge.device.startswith("cuda") and not cfg.fed.gpus_per_client:
        raise MietError(
            f"edge.device={cfg.edge.device} trains cohorts on a GPU but client workers get none: "
            "set fed.gpus_per_client (0.5: two workers share one GPU) or edge.device=cpu"
        )


@dataclass
class Prepared:
    spec: RunSpec
    partitions: pd.DataFrame
    used_ids: np.ndarray
    fingerprint: str = ""  # the dataset's content id
    plan: Plan | None = None  # plan.formats: each device's payload format


def nested_config(flat: dict[str, Any]) -> dict[str, Any]:
    """Flower's flattened run config ("fed.rounds": 3, "fed.fedprox.mu": 0.1) -> config tables."""
    return nest(flat, "--run-config")


def client_workers(cfg: SimulateConfig) -> int:
    """Client workers Flower can run at once: the CPUs this process may use (its affinity mask),
    or those of the Ray cluster the run joins, over fed.cpus_per_client."""
    cpus = float(usable_cpus())
    if cfg.run.ray_address:
        import ray

        _init_ray(cfg)
        cpus = float(ray.cluster_resources().get("CPU", cpus))
    return max(1, int(cpus // cfg.fed.cpus_per_client))


def prepare(
    cfg: SimulateConfig,
    sink: Path,
    ckpt: str = "",
    resume_round: int = 0,
    nodes: int | None = None,
) -> Prepared:
    """Data, pool, partitions, payload shape and the number of cohort nodes (`nodes`: as many
    as the federation has, under `flwr run`): everything decided before any process starts."""
    check_names(cfg)
    f = cfg.fed
    if f.device_images:  # each device draws its own few images: any number of devices
        ds = load_dataset(cfg.data.dataset)
        split = vtab_split(ds.labels, cfg.data.n_train, cfg.data.n_test or None, cfg.run.seed)
        clients = sample_population(
            split.train,
            ds.labels,
            f.num_clients,
            f.device_images,
            f.partition,
            f.alpha,
            f.classes_per_client,
            f.test_fraction,
            f.min_train,
            cfg.run.seed,
        )
        data = TaskData(
            clients=clients,
            global_test=split.test,
            labels=ds.labels.astype(np.int64),
            num_classes=ds.num_classes,
            image_bytes=int(ds.images[0].nbytes),
            fingerprint=ds.fingerprint,
            partitions=partition_table(clients, ds.labels, ds.num_classes),
            tasks=(),
            used=np.unique(np.concatenate([split.train, split.test])),
        )
    else:
        data = load_tasks(cfg)  # one dataset, or [[data.tasks]]
    clients = hold_out_val(data.clients, data.labels, f.val_fraction, f.min_train, cfg.run.seed)
    if f.val_fraction:
        data.partitions.insert(3, "n_val", [len(c.val) for c in clients])
        data.partitions["n_train"] = [len(c.train) for c in clients]
    kind, shape, feature_bytes = payload_info(cfg.model)
    plan = make_plan(cfg, [len(c.train) + len(c.val) + len(c.test) for c in clients])
    spec = RunSpec(
        config=cfg,
        cache_root=str(cache_dir()),
        sink=str(sink),
        clients_train=[c.train for c in clients],
        clients_test=[c.test for c in clients],
        global_test=data.global_test,
        labels=data.labels,
        num_classes=data.num_classes,
        payload_kind=kind,
        payload_shape=shape,
        actor=actor_name(cfg.model, backbone_datasets(cfg), str(cache_dir())),
        image_bytes=data.image_bytes,
        feature_bytes=feature_bytes,
        checkpoint=ckpt,
        resume_round=resume_round,
        num_nodes=nodes or num_nodes(f.num_clients, f.devices_per_node, client_workers(cfg)),
        state_dir=str((Path(ckpt) if ckpt else sink.absolute()) / DEVICE_STATE),
        formats=plan.formats if plan else (),
        tasks=data.tasks,
        clients_val=[c.val for c in clients] if f.val_fraction else [],
    )
    return Prepared(spec, data.partitions, data.used, data.fingerprint, plan)


def backbone_datasets(cfg: SimulateConfig) -> str | tuple[str, ...]:
    """What the backbone actor serves: the dataset, or every task's dataset in task order."""
    if cfg.data.tasks:
        return tuple(t.dataset for t in cfg.data.tasks)
    return cfg.data.dataset


def plan_check(cfg: SimulateConfig) -> None:
    """Every check `run_simulate` makes before starting Ray (a sweep's planning runs it): data,
    partitions (no device without data), payload shape; starts nothing, writes nothing kept."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="miet-fed-plan-") as tmp:
        prepare(cfg, Path(tmp))


def _write_spec(
    cfg: SimulateConfig, tmp: Path, ckpt: str, resume_round: int, nodes: int | None = None
) -> tuple[Prepared, Path]:
    """Prepare the run (resuming only over the same data) and write what every app reads."""
    prep = _resumable(prepare(cfg, tmp, ckpt, resume_round, nodes))
    spec_path = tmp / "spec.json"
    prep.spec.save(spec_path)
    prep.partitions.to_csv(tmp / "partitions.csv", index=False)
    if prep.plan is not None:
        prep.plan.frame.to_csv(tmp / "plan.csv", index=False)
    return prep, spec_path


def _check_gpus(cfg: SimulateConfig) -> None:
    """A backbone actor asking for more GPUs than the cluster has would wait forever: say so."""
    import ray

    want = cfg.run.backbone_gpus
    have = float(ray.cluster_resources().get("GPU", 0)) if want else 0.0
    if want > have:
        raise MietError(
            f"run.backbone_gpus={want:g} but the Ray cluster has {have:g} GPU(s); set "
            "run.backbone_gpus=0 (the backbone then runs where it lands, on CPU without a GPU) "
            "or add a GPU node"
        )
    want = cfg.fed.gpus_per_client
    have = float(ray.cluster_resources().get("GPU", 0)) if want else 0.0
    if want > have:
        raise MietError(
            f"fed.gpus_per_client={want:g} but the Ray cluster has {have:g} GPU(s); set "
            "fed.gpus_per_client=0 (cohorts then train on CPU) or add a GPU node"
        )


def _resumable(prep: Prepared) -> Prepared:
    """The same settings over changed data (an npz or image folder edited in between) must not
    resume: the checkpoint is dropped and the run starts from round 1."""
    spec = prep.spec
    if not spec.checkpoint:
        return prep
    resume = checkpoint.check_data(spec.checkpoint, spec.resume_round, prep.fingerprint)
    return (
        prep if resume == spec.resume_round else replace(prep, spec=replace(spec, resume_round=0))
    )


def run_simulate(cfg: SimulateConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    out = run_path(cfg.run.out, default_name(cfg))
    check_names(cfg)
    with checkpointed(out, cfg) as (ckpt, resume_round), atomic_dir(out) as tmp:
        prep, spec_path = _write_spec(cfg, tmp, ckpt, resume_round)
        if prep.spec.resume_round and cfg.run.progress:
            print(f"resuming after round {prep.spec.resume_round} from {ckpt}", file=sys.stderr)
        # machine-readable start-up split (benchmarks): this plus startup_seconds is when
        # Flower's engine started, counted from run_simulate's start (wall_seconds' zero)
        prepare_seconds = time.perf_counter() - t0
        timings = simulate_in_process(prep, str(spec_path))
        timings["prepare_seconds"] = prepare_seconds
        timings["resumed_after_round"] = prep.spec.resume_round
        summary = collect(prep.spec, tmp, timings | {"wall_seconds": time.perf_counter() - t0})
        (tmp / "config.toml").write_text(to_toml(cfg))
    summary["out"] = str(out)
    if summary["failures"] and not cfg.fed.allow_failures:
        raise MietError(
            f"{summary['failures']} client replies failed (see {out}/clients.csv); "
            "set fed.allow_failures=true to accept a run with failures"
        )
    return summary


def simulate_in_process(prep: Prepared, spec_path: str) -> dict[str, float]:
    """Ray + backbone actor + Flower's simulation engine, shut down whatever happens."""
    import ray
    from flwr.simulation import run_simulation

    from miet_fed.federation.actor import ensure_with_bar, start_actor
    from miet_fed.federation.client_app import app as client_app
    from miet_fed.federation.flower_compat import quick_polling, ray_left_running
    from miet_fed.federation.server_app import make_server_app

    cfg = prep.spec.config
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    logging.getLogger("flwr").setLevel(logging.WARNING)
    quiet_flower()
    _init_ray(cfg, prep.spec.num_nodes)
    ok = False
    try:
        _check_gpus(cfg)
        actor, reused = session_actor(
            prep.spec.actor,
            lambda: start_actor(
                cfg.model,
                backbone_datasets(cfg),
                prep.spec.cache_root,
                cfg.run,
                prep.spec.actor,
                prep.spec.namespace,
            ),
        )
        if reused:  # this run's counts start at zero (backbone_stats.json)
            ray.get(actor.reset_stats.remote())
        t1 = time.perf_counter()
        timings["features_computed"] = ensure_with_bar(actor, prep.used_ids, cfg.run.progress)
        timings["extract_seconds"] = time.perf_counter() - t1
        timings["startup_seconds"] = time.perf_counter() - t0
        t2 = time.perf_counter()
        with (
            ray_left_running() if in_session() else nullcontext(),
            quick_polling(prep.spec.num_nodes),
        ):
            run_simulation(
                server_app=make_server_app(spec_path),
                client_app=client_app,
                num_supernodes=prep.spec.num_nodes,
                backend_config={
                    "client_resources": {
                        "num_cpus": cfg.fed.cpus_per_client,
                        "num_gpus": cfg.fed.gpus_per_client,
                        # Flower hands a dead ClientApp actor back to its pool, so without a
                        # restart every later message to it fails too; Ray restarts the process
                        # (the message it was running is still recorded as one failure).
                        "max_restarts": WORKER_RESTARTS,
                    },
                },
            )
        timings["simulation_seconds"] = time.perf_counter() - t2
        ok = True
    finally:
        end_of_run(ok)
    return timings


def run_from_flwr(grid: Any, context: Any) -> None:
    """`flwr run .`: the ServerApp prepares the run itself from the app config.

    `context.run_config` is the whole SimulateConfig as Flower's native flattened keys
    (`fed.rounds`, ...): pyproject's `[tool.flwr.app.config.<section>]` tables (the defaults of
    `configs/simulate.toml`, generated and tested) with `--run-config "fed.rounds=3"` or
    `--run-config my.toml` on top. The devices (`fed.num_clients`) are packed onto however many
    SuperNodes the federation has. A relative `run.out` (and the default `results/<name>`)
    resolves against the ServerApp process's working directory: the folder the local SuperLink
    was started from.
    """
    from miet_fed.config import build_config
    from miet_fed.federation.actor import feature_source
    from miet_fed.federation.server_app import run_server

    def count_nodes(settle: float = 1.0, timeout: float = 60.0) -> int:
        """Node count once it has stopped changing: SuperNodes register while we start."""
        t_start = time.monotonic()
        seen, since = -1, t_start
        while True:
            n, now = len(list(grid.get_node_ids())), time.monotonic()
            if n != seen:
                seen, since = n, now
            if (n and now - since >= settle) or now - t_start >= timeout:
                return n
            time.sleep(0.1)

    cfg = build_config(SimulateConfig, nested_config(dict(context.run_config)), "--run-config")
    check_names(cfg)
    n_nodes = count_nodes()  # the federation's SuperNodes: devices are packed onto them
    t0 = time.perf_counter()
    out = run_path(cfg.run.out, default_name(cfg)).absolute()
    with checkpointed(out, cfg) as (ckpt, resume_round), atomic_dir(out) as tmp:
        prep, spec_path = _write_spec(cfg, tmp, ckpt, resume_round, n_nodes)
        resume_round = prep.spec.resume_round
        t1 = time.perf_counter()
        computed = feature_source(str(spec_path)).ensure(prep.used_ids)
        timings = {
            "features_computed": computed,
            "extract_seconds": time.perf_counter() - t1,
            "resumed_after_round": resume_round,
        }
        t2 = time.perf_counter()
        run_server(grid, str(spec_path))
        timings["simulation_seconds"] = time.perf_counter() - t2
        summary = collect(prep.spec, tmp, timings | {"wall_seconds": time.perf_counter() - t0})
        (tmp / "config.toml").write_text(to_toml(cfg))
    print(f"results: {out}", flush=True)
    if summary["failures"] and not cfg.fed.allow_failures:
        raise MietError(
            f"{summary['failures']} client replies failed (see {out}/clients.csv); "
            "set fed.allow_failures=true to accept a run with failures"
        )
