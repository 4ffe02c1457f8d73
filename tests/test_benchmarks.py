"""Smoke test of the benchmark suite: the quick size of two benchmarks runs and writes its files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow  # fresh processes that import torch and timm: tens of seconds


def test_quick_benchmarks_write_json_and_md(tmp_path):
    out = tmp_path / "bench"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "benchmarks", "--size", "quick"]
    cmd += ["--only", "cache,edge_resources", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]

    data = json.loads((out / "benchmarks.json").read_text())
    assert {"machine", "size", "summary", "benchmarks"} <= set(data)
    assert data["size"] == "quick"
    assert {"cpu_count", "torch", "flwr", "ray", "platform"} <= set(data["machine"])
    assert set(data["benchmarks"]) == {"cache", "edge_resources"}
    for rep in data["benchmarks"].values():
        assert rep["error"] is None
        assert rep["figures"] and rep["rows"] and rep["checks"]
        assert all({"metric", "value", "target", "met"} <= set(c) for c in rep["checks"])

    cache = data["benchmarks"]["cache"]["figures"]
    assert cache["cold_forwards"] > 0 and cache["warm_forwards"] == 0
    assert cache["warm_payload_identical"] is True

    edge = data["benchmarks"]["edge_resources"]["figures"]
    assert set(edge) == {"lae", "lora", "full"}
    lae, lora, full = edge["lae"], edge["lora"], edge["full"]
    assert lae["trainable_params"] < full["trainable_params"]
    assert lora["trainable_params"] < full["trainable_params"] == full["total_params"]
    assert lae["fwd_bwd_flops_per_image"] < lora["fwd_bwd_flops_per_image"]
    assert lora["fwd_bwd_flops_per_image"] <= full["fwd_bwd_flops_per_image"]

    md = (out / "benchmarks.md").read_text()
    assert "## Summary" in md and "`cache`" in md and "`edge_resources`" in md


def test_tree_memory_reads_pss_only_when_asked():
    """Timed jobs sample RSS alone (reading PSS slows the process it watches)."""
    from benchmarks.machine import tree_memory

    rss, pss, n = tree_memory(os.getpid(), with_pss=False)
    assert rss > 0 and pss == 0 and n >= 1
    rss, pss, n = tree_memory(os.getpid())
    assert 0 < pss <= rss * 2 and n >= 1
