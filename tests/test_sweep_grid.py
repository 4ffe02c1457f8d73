"""`miet-fed sweep --grid`: a grid from the command line, with or without a sweep file, every
point checked (data included) at planning and with --dry-run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from miet_fed.cli import main
from tests.test_sweep import write_sweep

TINY = [
    "--set", "model.name=vit_tiny_patch16_224",
    "--set", "model.weights=random",
    "--set", "model.img_size=32",
]  # fmt: skip


def _dry(capsys, *args: str) -> dict:
    assert main(["sweep", *args, "--dry-run", "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_grid_without_a_file_is_typed_and_named(tiny_npz, capsys):
    info = _dry(
        capsys,
        "--grid", "fed.num_clients=2,4",
        "--grid", "fed.strategy=local,fedavg",
        "--set", f"data.dataset=npz:{tiny_npz}",
        "--set", "data.n_train=60",
        *TINY,
    )  # fmt: skip
    assert info["command"] == "simulate" and info["name"] == "sweep-num_clients-strategy"
    values = [p["values"] for p in info["points"]]
    assert values[0] == {"fed.num_clients": 2, "fed.strategy": "local"}  # typed: 2, not "2"
    assert len(values) == 4 and not Path("results").exists()  # a dry run writes nothing


def test_grid_replaces_the_files_values_of_its_key(tiny_npz, tmp_path, capsys):
    toml = write_sweep(tmp_path / "s.toml", tiny_npz, grid={"train.lr": [0.1, 0.2]})
    info = _dry(capsys, str(toml), "--grid", "train.lr=0.001,0.002,0.003", "--grid", "model.k=1,2")
    assert [p["values"]["train.lr"] for p in info["points"]][:3] == [0.001, 0.001, 0.002]
    assert len(info["points"]) == 6


def test_more_devices_than_images_fails_at_planning(tiny_npz, capsys):
    args = ["sweep", "--grid", "fed.num_clients=2,100", "--set", f"data.dataset=npz:{tiny_npz}"]
    args += ["--set", "data.n_train=60", *TINY]
    for extra in (["--dry-run"], ["--quiet"]):
        assert main([*args, *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "(point 2: fed.num_clients=100)" in err
        assert "fed.num_clients" in err and not Path("results").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--grid", "fed.rounds"], "--grid expects section.key=v1,v2"),
        (["--grid", "fed.rounds=1,,2"], "no empty value"),
        (["--grid", "rounds=1,2"], "is not a section.key config key"),
        (["--grid", "fed.rounds=one,2"], "fed.rounds must be an integer"),
        (["--grid", "run.out=a,b"], "run.out is set by the sweep"),
        (["--grid", "fed.rounds=1,2", "--set", "fed.rounds=3"], "both fixed"),
        ([], "give a sweep file or at least one --grid"),
        (["--grid", "fed.rounds=1,2", "--name", "a/b"], "--name must be a plain folder name"),
    ],
)
def test_bad_grids_are_one_line(capsys, args, message):
    assert main(["sweep", *args, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_config_sweep_lists_the_file_keys_and_the_points(tiny_npz, capsys):
    assert main(["config", "sweep"]) == 0
    out = capsys.readouterr().out
    for key in ("sweep.name", "sweep.command", "sweep.seeds", "[set]", "[grid]", "[[point]]"):
        assert key in out
    args = ["config", "sweep", "--grid", "model.k=1,2", "--command", "tune", *TINY]
    args += ["--set", f"data.dataset=npz:{tiny_npz}", "--set", "data.n_train=60"]
    assert main([*args, "--set", "data.n_val=12"]) == 0
    assert "2 points, 0 done" in capsys.readouterr().out
