"""The machine a benchmark ran on, and the memory of the processes it started.

Machine facts (CPUs, memory, load, library versions) go into every report so numbers can be
compared across machines; `MemorySampler` keeps the peak RSS and PSS of a whole process tree
(Ray's GCS, raylet and workers are descendants of the process that called ray.init), read from
/proc. Nothing here imports torch at module level.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import threading
from pathlib import Path
from typing import Any

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
    from miet_fed.cpus import usable_cpus

    usable = usable_cpus()  # what a run sizes its Ray instance and workers by
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


def tree_memory(pid: int, with_pss: bool = True) -> tuple[int, int, int]:
    """(sum of RSS, sum of PSS, process count) of pid's process tree, in bytes.

    RSS counts shared pages (torch's libraries, Ray's object store) once per process: an upper
    bound. PSS splits each shared page among its users: the tree's actual footprint. PSS is
    costly to read (the kernel walks every page table under the process's memory lock), so
    `with_pss=False` skips it (PSS 0) where a job is timed rather than weighed.
    """
    rss = pss = n = 0
    for p in process_tree(pid):
        try:
            rss += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            continue
        n += 1
        if not with_pss:
            continue
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
                    break
    return rss, pss, n


class MemorySampler:
    """Samples a process tree's memory in a thread; keeps the peaks.

    With `pss=True` each sample reads every process's smaps_rollup, which holds the process's
    memory lock while the kernel walks its page tables: measured on the 2-core machine, sampling
    that every 0.25 s slowed a 1,000-device simulation's rounds by about 25 % (allocation-heavy
    stacked steps wait on the lock) and a 10-device one by about 7 %. Timed jobs use pss=False.
    """

    def __init__(self, pid: int, interval: float = 0.25, pss: bool = False) -> None:
        self.pid, self.interval, self.pss = pid, interval, pss
        self.peak_rss = self.peak_pss = self.peak_procs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                rss, pss, n = tree_memory(self.pid, self.pss)
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
