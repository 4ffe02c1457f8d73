"""`checkpoint`: what per-round checkpoints (run.checkpoint, on by default) cost a simulation."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

from benchmarks.jobs import REAL, TINY, job_settings, prefill, simulate_cli, size_job
from benchmarks.report import Report, median, ratio

DESCRIPTION = (
    "`miet-fed simulate` with a warm cache, run alternately with `run.checkpoint=false` and "
    "`true` (the default): the simulation's seconds (summary simulation_seconds, the Flower "
    "rounds) and the checkpoint folder's peak size on disk, sampled every 0.1 s during the run "
    "(it is deleted when the run completes). With checkpoints each training client writes its "
    "state (safetensors) every round and the server commits global arrays and rows each round."
)

SIZES = {
    "quick": {
        "model": TINY,
        "extra": {"fed.num_clients": 4, "data.n_train": 100, "data.n_test": 50},
        "rounds": 4,
        "repeats": 2,
    },
    # The default job (configs/simulate.toml: 20 clients, FedPer, DINOv2 ViT-S/14 at 112 px).
    "default": {"model": REAL, "extra": {}, "rounds": 4, "repeats": 2},
    "large": {"model": REAL, "extra": {}, "rounds": 10, "repeats": 3},
}
TARGET = 1.05  # checkpointing may cost at most 5 % of the simulation's time


def _folder_bytes(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        with contextlib.suppress(FileNotFoundError):  # pruned while we looked
            total += p.stat().st_size if p.is_file() else 0
    return total


class _PeakSize:
    """Peak size of a folder that appears, grows and is deleted while a run goes on."""

    def __init__(self, path: Path) -> None:
        self.path, self.peak, self.files = path, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.1):
            if self.path.exists():
                self.peak = max(self.peak, _folder_bytes(self.path))
                self.files = max(self.files, sum(1 for _ in self.path.rglob("*.safetensors")))

    def __enter__(self) -> _PeakSize:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run(size: str, work: Path) -> Report:
    s = SIZES[size]
    pairs, cfg = size_job(s)
    rep = Report("checkpoint", DESCRIPTION)
    rep.settings = {
        **job_settings(cfg),
        "edge": cfg.edge.name,
        "rounds": cfg.fed.rounds,
        "repeats": s["repeats"],
    }
    prefill(cfg, work)
    seconds: dict[bool, list[float]] = {False: [], True: []}
    peak = files = 0
    leftover = False
    for i in range(s["repeats"]):
        for on in (False, True):
            out = work / f"sim-{i}-{on}"
            with _PeakSize(out.parent / f".{out.name}.ckpt") as watch:
                sim = simulate_cli([*pairs, f"run.checkpoint={str(on).lower()}"], out)
            seconds[on].append(sim.summary["simulation_seconds"])
            if on:
                peak, files = max(peak, watch.peak), max(files, watch.files)
                leftover = leftover or watch.path.exists()
    off_s, on_s = median(seconds[False]), median(seconds[True])
    overhead = ratio(on_s, off_s)
    rep.figures = {
        "simulation_seconds_off": seconds[False],
        "simulation_seconds_on": seconds[True],
        "median_off_seconds": off_s,
        "median_on_seconds": on_s,
        "on_over_off": overhead,
        "checkpoint_peak_bytes": peak,
        "checkpoint_peak_state_files": files,
    }
    rep.rows = [
        {"run.checkpoint": "false", "median simulation s": off_s, "peak checkpoint bytes": 0},
        {"run.checkpoint": "true", "median simulation s": on_s, "peak checkpoint bytes": peak},
    ]
    rep.check(
        "simulation time, checkpoint on / off",
        overhead,
        f"<= {TARGET:g}",
        None if overhead is None else overhead <= TARGET,
    )
    rep.check("checkpoint left after a completed run", leftover, "no", not leftover)
    rep.notes.append(
        f"Peak checkpoint size {peak / 1e6:.2f} MB in at most {files} safetensors files "
        "(one state per client that has trained, plus the server's arrays)."
    )
    return rep
