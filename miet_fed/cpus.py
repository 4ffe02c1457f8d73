"""CPUs this process may use.

`os.cpu_count()` is the machine's count; a run started under `taskset`, in a cgroup cpuset
(containers) or by a batch scheduler that grants part of a node may use fewer. Sizing Ray and
the client workers by the machine would start more worker processes than there are CPUs to run
them, each paying its start-up (interpreter, torch, Flower) for no parallelism. The affinity mask
is what the process and its children (Ray's processes inherit it) can actually run on.
"""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """CPUs in this process's affinity mask (the machine's count where there is no mask)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS and Windows have no affinity mask
        return max(1, os.cpu_count() or 1)
