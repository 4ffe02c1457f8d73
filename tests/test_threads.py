"""The backbone actor's torch threads: every usable CPU by default, fewer with
$MIET_FED_THREADS, and a bad value is a one-line error before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from miet_fed.cli import main
from miet_fed.cpus import usable_cpus
from miet_fed.errors import MietError
from miet_fed.torch_device import THREADS_ENV, cpu_threads
from tests.conftest import TINY


def test_threads_default_to_every_cpu_and_follow_the_environment(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert cpu_threads() == usable_cpus()
    monkeypatch.setenv(THREADS_ENV, "1")
    assert cpu_threads() == 1
    for bad in ("0", "two", "-1", "1.5"):
        monkeypatch.setenv(THREADS_ENV, bad)
        with pytest.raises(MietError, match=THREADS_ENV):
            cpu_threads()


def test_backbone_server_uses_the_threads_it_is_told(tmp_path, monkeypatch):
    """The actor's class, in this process (as Ray runs it): it sets torch's intra-op threads."""
    from miet_fed.config import ModelConfig
    from miet_fed.federation.actor import BackboneServer
    from tests.conftest import brightness_npz

    brightness_npz(tmp_path / "p.npz", 12, seed=0)
    model = ModelConfig(name="vit_tiny_patch16_224", weights="random", img_size=32)
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv(THREADS_ENV, "1")
        BackboneServer(model, f"npz:{tmp_path / 'p.npz'}", str(tmp_path / "c"), False)
        assert torch.get_num_threads() == 1
        if usable_cpus() > 1:
            monkeypatch.delenv(THREADS_ENV)
            BackboneServer(model, f"npz:{tmp_path / 'p.npz'}", str(tmp_path / "c"), False)
            assert torch.get_num_threads() == usable_cpus()
    finally:
        torch.set_num_threads(before)


def test_bad_threads_setting_is_one_line_before_any_work(monkeypatch, capsys):
    monkeypatch.setenv(THREADS_ENV, "lots")
    assert main(["simulate", *TINY, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("miet-fed: error: ") and "\n" not in err, err
    assert f"{THREADS_ENV}='lots'" in err
    assert not Path("results").exists() or not any(Path("results").iterdir())
