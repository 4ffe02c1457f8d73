"""A ViT's shape facts (depth, width, tokens) are kept in the cache root after the first run
describes the model, so later runs on cached features never import timm (2.4 s per process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from miet_fed.cloud import backbone
from miet_fed.cloud.backbone import SHAPE_FACTS, describe_vit

MODEL, SIZE = "vit_tiny_patch16_224", 32
PROBE = (
    "import sys, json; from miet_fed.cloud.backbone import describe_vit; "
    f"facts = describe_vit('{MODEL}', {SIZE}); "
    "print(json.dumps([facts, 'timm' in sys.modules]))"
)


def _probe(cache: Path) -> tuple[dict, bool]:
    env = {**os.environ, "MIET_FED_CACHE": str(cache)}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    ).stdout
    facts, imported = json.loads(out.strip().splitlines()[-1])
    return facts, imported


def _files(cache: Path) -> list[Path]:
    return sorted((cache / SHAPE_FACTS).glob("*.json"))


def test_a_second_process_reads_the_facts_without_importing_timm(tmp_path):
    first, imported = _probe(tmp_path)
    assert imported and len(_files(tmp_path)) == 1
    assert first == {"depth": 12, "dim": 192, "tokens": 5, "prefix": 1, "params": first["params"]}
    again, imported = _probe(tmp_path)
    assert again == first and not imported


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """This process's cache root is tmp_path, and describe_vit forgets what it has read."""
    monkeypatch.setenv("MIET_FED_CACHE", str(tmp_path))
    backbone._describe_vit.cache_clear()
    yield tmp_path
    backbone._describe_vit.cache_clear()


@pytest.mark.parametrize("damage", ["{not json", '{"key": "timm==0 other 1", "facts": {}}', "[]"])
def test_a_damaged_or_foreign_file_is_described_again_and_rewritten(fresh, damage):
    facts = describe_vit(MODEL, SIZE)
    (path,) = _files(fresh)
    path.write_text(damage)
    backbone._describe_vit.cache_clear()
    assert describe_vit(MODEL, SIZE) == facts
    assert json.loads(path.read_text())["facts"] == facts


def test_an_unwritable_cache_root_still_describes(fresh, monkeypatch):
    root = fresh / "root"
    root.write_text("a file where the cache folder would be")
    monkeypatch.setenv("MIET_FED_CACHE", str(root))
    assert describe_vit(MODEL, SIZE)["dim"] == 192
