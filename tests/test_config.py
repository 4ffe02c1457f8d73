"""Config loading: TOML + overrides into frozen dataclasses, every mistake named."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from miet_fed.config import SimulateConfig, TuneConfig, load_config, parse_overrides, to_toml
from miet_fed.errors import MietError

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_configs_equal_builtin_defaults():
    """configs/*.toml are small overlays that name the experiment's settings; the dataclasses
    hold the defaults, and the two agree."""
    from miet_fed.config import SimulateConfig

    assert load_config(TuneConfig, ROOT / "configs" / "tune.toml", {}) == TuneConfig()
    assert load_config(SimulateConfig, ROOT / "configs" / "simulate.toml", {}) == SimulateConfig()


def test_a_saved_config_older_than_a_key_reads_as_what_it_ran_with():
    """Keys a run folder predates take the value that run used (`legacy`), not today's default:
    a tune run from before validation had none and tested every epoch."""
    from miet_fed.config import SimulateConfig, build_config, with_legacy

    old = {"data": {"n_train": 60}, "train": {"epochs": 2}}
    cfg = build_config(TuneConfig, with_legacy(TuneConfig, old))
    assert (cfg.data.n_val, cfg.train.patience, cfg.train.test_curve) == (0, 0, True)
    assert with_legacy(TuneConfig, {"data": {"n_val": 7}})["data"]["n_val"] == 7  # kept
    assert with_legacy(SimulateConfig, old) == old  # simulate has none of these keys


def test_overrides_are_typed_by_field():
    cfg = load_config(
        TuneConfig,
        None,
        parse_overrides(
            ["model.k=9", "train.lr=0.01", "run.progress=false", "data.dataset=digits"]
        ),
    )
    assert (cfg.model.k, cfg.train.lr, cfg.run.progress, cfg.data.dataset) == (
        9,
        0.01,
        False,
        "digits",
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.k = 3  # type: ignore[misc]


def test_roundtrip_through_toml(tmp_path):
    cfg = load_config(TuneConfig, None, parse_overrides(["edge.rank=8", "edge.heads=2"]))
    path = tmp_path / "c.toml"
    path.write_text(to_toml(cfg))
    assert load_config(TuneConfig, path, {}) == cfg


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (["model.kk=3"], "unknown key 'model.kk'.*valid: model.name"),
        (["modle.k=3"], r"unknown section \[modle\].*valid: data, edge, model"),
        (["model.k=three"], "model.k must be an integer, got 'three'"),
        (["model.k=-1"], "model.k must be >= 0"),
        (["edge.rank=0"], "edge.rank must be >= 1"),
        (["edge.rank=30", "edge.heads=4"], "divisible"),
        (["edge.pool=max"], "unknown edge.pool 'max'"),
        (["train.lr=0"], "train.lr must be > 0"),
        (["run.progress=maybe"], "must be true or false"),
        (["k=3"], "section.key=value"),
    ],
)
def test_bad_overrides_name_the_problem(pairs, message):
    with pytest.raises(MietError, match=message):
        load_config(TuneConfig, None, parse_overrides(pairs))


def test_bad_toml_types_and_files(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[model]\nk = "nine"\n')
    with pytest.raises(MietError, match="model.k must be int"):
        load_config(TuneConfig, bad, {})
    bad.write_text("[model\n")
    with pytest.raises(MietError, match="not valid TOML"):
        load_config(TuneConfig, bad, {})
    with pytest.raises(MietError, match="config file not found"):
        load_config(TuneConfig, tmp_path / "missing.toml", {})


@pytest.mark.parametrize(
    ("out", "ok"),
    [
        ("results/mine", True),
        ("results/a/b", True),
        ("./results/x", True),
        ("results", False),
        ("results/../x", False),
        ("../results/x", False),
        ("/tmp/x", False),
        ("~/x", False),
    ],
)
def test_config_file_out_stays_inside_results(out, ok, tmp_path):
    from miet_fed.config import SimulateConfig, load_config

    path = tmp_path / "c.toml"
    path.write_text(f'[run]\nout = "{out}"\n')
    if ok:
        assert load_config(SimulateConfig, path, {}).run.out == out
    else:
        with pytest.raises(MietError, match="outside results/"):
            load_config(SimulateConfig, path, {})
    # the command line may choose any folder
    assert load_config(SimulateConfig, None, {"run": {"out": "/tmp/x"}}).run.out == "/tmp/x"


def test_telemetry_is_off_unless_asked():
    import subprocess
    import sys

    code = (
        "import os; import miet_fed; import flwr.supercore.telemetry as t; "
        "print(t.FLWR_TELEMETRY_ENABLED, os.environ['RAY_USAGE_STATS_ENABLED'])"
    )
    env = {k: v for k, v in os.environ.items() if "TELEMETRY" not in k and "USAGE_STATS" not in k}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["0", "0"], out.stderr
    env["FLWR_TELEMETRY_ENABLED"] = "1"  # an explicit choice is kept
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["1", "0"], out.stderr


def test_every_config_file_in_configs_is_valid(tmp_path, monkeypatch):
    """Each shipped config loads, and each sweep file plans every point (names, keys and
    ranges checked; data not loaded), so a renamed key or strategy cannot rot in configs/."""
    from miet_fed.sweep import load_sweep, plan

    monkeypatch.chdir(ROOT)  # sweep files name their base relative to the checkout
    files = sorted((ROOT / "configs").glob("*.toml"))
    sweeps = [f for f in files if f.name.startswith("sweep_")]
    assert len(sweeps) >= 5
    load_config(SimulateConfig, ROOT / "configs" / "simulate_tasks.toml", {})
    for path in sweeps:
        sweep = load_sweep(path)
        points = plan(sweep, tmp_path / path.stem, quiet=True, check_data=False)
        assert points, path
