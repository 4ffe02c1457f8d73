"""`miet-fed sweep` on a tiny random ViT: grid and explicit points, up-front validation, resume,
failed points (tests/test_plots.py sweeps tiny Flower simulations and reports them)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from miet_fed.cli import main
from miet_fed.sweep import expand, load_sweep, plan

TINY_SET = {
    "model.name": "vit_tiny_patch16_224",
    "model.weights": "random",
    "model.img_size": 32,
    "data.n_train": 60,
    "data.n_test": 60,
    "train.epochs": 2,
}
TUNE_SET = {"data.n_val": 12}  # tune validates on 12 of the 60 (simulate refuses the key)
TIMING = ("seconds", "train_seconds", "wall_seconds", "extract_seconds")


def session_cache(tmp_path_factory) -> Path:
    """One feature cache for the sweep and report tests: the tiny dataset's features (keyed by
    content, model and gather) are computed once per session, not once per test."""
    path = tmp_path_factory.getbasetemp() / "tiny-feature-cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(autouse=True)
def shared_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MIET_FED_CACHE", str(session_cache(tmp_path_factory)))


def _toml(value: Any) -> str:
    return json.dumps(value)  # strings, numbers, booleans and lists read back the same in TOML


def write_sweep(
    path: Path,
    npz: Path,
    *,
    command: str = "tune",
    grid: dict[str, list[Any]] | None = None,
    points: list[dict[str, Any]] | None = None,
    fixed: dict[str, Any] | None = None,
    seeds: list[int] | None = None,
    name: str = "sw",
) -> Path:
    lines = ["[sweep]", f'name = "{name}"', f'command = "{command}"']
    if seeds is not None:
        lines.append(f"seeds = {_toml(seeds)}")
    lines.append("[set]")
    varied = set(grid or {}) | {k for p in points or [] for k in p}
    own = {**TINY_SET, **(TUNE_SET if command == "tune" else {})}
    tiny = {k: v for k, v in own.items() if k not in varied}  # give way to what varies
    for key, value in {"data.dataset": f"npz:{npz}", **tiny, **(fixed or {})}.items():
        lines.append(f'"{key}" = {_toml(value)}')
    if grid:
        lines.append("[grid]")
        lines += [f'"{k}" = {_toml(v)}' for k, v in grid.items()]
    for point in points or []:
        lines.append("[[point]]")
        lines += [f'"{k}" = {_toml(v)}' for k, v in point.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _sweep(capsys, *args: str) -> tuple[int, dict, str]:
    rc = main(["sweep", *args, "--quiet", "--json"])
    out = capsys.readouterr()
    return rc, json.loads(out.out.strip().splitlines()[-1]), out.err


def _drop_timing(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=[c for c in TIMING if c in df.columns])


def test_grid_is_the_cartesian_product_with_seeds(tiny_npz, tmp_path):
    toml = write_sweep(
        tmp_path / "s.toml",
        tiny_npz,
        grid={"edge.rank": [8, 16], "train.lr": [0.001, 0.002, 0.003]},
        seeds=[0, 1],
    )
    sweep = load_sweep(toml)
    overrides = expand(sweep)
    assert len(overrides) == 2 * 3 * 2
    assert overrides[0] == {"edge.rank": 8, "train.lr": 0.001, "run.seed": 0}
    assert overrides[-1] == {"edge.rank": 16, "train.lr": 0.003, "run.seed": 1}
    points = plan(sweep, Path("results/sw"))
    assert len({p.slug for p in points}) == 12
    assert points[1].slug == "rank_8-lr_0.001-seed_1"
    assert points[1].folder == Path("results/sw/runs/rank_8-lr_0.001-seed_1")
    cfg = points[-1].cfg
    assert (cfg.edge.rank, cfg.train.lr, cfg.run.seed, cfg.train.epochs) == (16, 0.003, 1, 2)
    assert cfg.run.out == str(points[-1].folder)
    assert not Path("results").exists()  # planning writes nothing


def test_explicit_points_crossed_with_grid(tiny_npz, tmp_path):
    toml = write_sweep(
        tmp_path / "s.toml",
        tiny_npz,
        points=[
            {"model.gather": "sum", "model.k": 6},
            {"model.gather": "cls", "edge.name": "linear"},
            {"model.dtype": "int8"},
        ],
        grid={"run.seed": [0, 1]},
    )
    points = plan(load_sweep(toml), Path("results/sw"))
    assert len(points) == 6
    # Keys a point leaves out take the resolved config value (defaults: sum, k=12, lae, fp32).
    assert list(points[0].values) == [
        "model.gather",
        "model.k",
        "edge.name",
        "model.dtype",
        "run.seed",
    ]
    assert points[2].values == {
        "model.gather": "cls",
        "model.k": 12,
        "edge.name": "linear",
        "model.dtype": "fp32",
        "run.seed": 0,
    }
    assert points[5].slug == "gather_sum-k_12-edge_lae-dtype_int8-seed_1"


def test_dry_run_lists_points_and_writes_nothing(tiny_npz, tmp_path, capsys):
    toml = write_sweep(tmp_path / "s.toml", tiny_npz, grid={"edge.rank": [8, 16]}, seeds=[3])
    assert main(["sweep", str(toml), "--dry-run", "--json"]) == 0
    out = capsys.readouterr().out
    listing = json.loads(out.strip().splitlines()[-1])
    assert [p["run"] for p in listing["points"]] == ["rank_8-seed_3", "rank_16-seed_3"]
    assert "2 points, 0 done" in out
    assert not Path("results").exists()


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ({"edge.rank": [8], "train.epochz": [1]}, "unknown key 'train.epochz'"),
        ({"train.batch_size": [8, 0]}, "s.toml (point 2: train.batch_size=0)]"),
        ({"model.gather": ["sum", "nope"]}, "nope"),
        ({"fed.rounds": [1]}, "unknown section [fed]"),
        ({"edge.rank": 8}, "must be a non-empty list"),
    ],
)
def test_bad_point_fails_up_front_and_leaves_nothing(tiny_npz, tmp_path, capsys, grid, message):
    toml = write_sweep(tmp_path / "s.toml", tiny_npz, grid=grid)
    assert main(["sweep", str(toml), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("miet-fed: error:") and message in err[0]
    assert not Path("results").exists()


def test_sweep_file_shape_errors(tiny_npz, tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[sweep]\ncommand = "train"\n')
    assert main(["sweep", str(bad)]) == 2
    assert "sweep.command" in capsys.readouterr().err
    dup = write_sweep(tmp_path / "dup.toml", tiny_npz, points=[{"edge.rank": 8}, {"edge.rank": 8}])
    assert main(["sweep", str(dup)]) == 2
    assert "same run" in capsys.readouterr().err
    both = write_sweep(
        tmp_path / "both.toml", tiny_npz, grid={"train.epochs": [1, 2]}, fixed={"train.epochs": 3}
    )
    assert main(["sweep", str(both)]) == 2
    assert "both fixed" in capsys.readouterr().err
    assert main(["sweep", str(tmp_path / "missing.toml")]) == 2
    assert "not found" in capsys.readouterr().err
    assert not Path("results").exists()


def test_resume_runs_only_what_is_missing(tiny_npz, tmp_path, capsys):
    toml = write_sweep(tmp_path / "s.toml", tiny_npz, grid={"train.lr": [0.001, 0.002, 0.003]})
    rc, info, err = _sweep(capsys, str(toml))
    assert rc == 0 and (info["ran"], info["skipped"], info["failed"]) == (3, 0, 0)
    assert err.count("done in") == 3 and "[3/3] train.lr=0.003 ... done in" in err
    out = Path("results/sw")
    assert {p.name for p in out.iterdir()} == {
        ".miet-fed-run.json",
        "runs",
        "runs.csv",
        "summary.csv",
        "sweep.json",
    }
    full_runs = pd.read_csv(out / "runs.csv")
    full_summary = pd.read_csv(out / "summary.csv")
    assert len(full_runs) == 3 * 2  # one row per run and epoch
    assert list(full_runs.columns[:3]) == ["run", "train.lr", "epoch"]
    assert list(full_summary["train.lr"]) == [0.001, 0.002, 0.003]
    assert full_summary["error"].isna().all() and full_summary["test_acc"].notna().all()
    assert (full_summary["bytes_source"] != "unknown").all()

    runs = sorted((out / "runs").iterdir())
    mtimes = {p.name: (p / "summary.json").stat().st_mtime_ns for p in runs}
    shutil.rmtree(out / "runs" / "lr_0.002")
    rc, info, err = _sweep(capsys, str(toml))
    assert rc == 0 and (info["ran"], info["skipped"]) == (1, 2)
    assert "[1/3] train.lr=0.001 ... skipped (done)" in err
    assert "[2/3] train.lr=0.002 ... done in" in err
    assert "[3/3] train.lr=0.003 ... skipped (done)" in err
    for name in ("lr_0.001", "lr_0.003"):
        assert (out / "runs" / name / "summary.json").stat().st_mtime_ns == mtimes[name]
    resumed = pd.read_csv(out / "runs.csv")
    pd.testing.assert_frame_equal(_drop_timing(resumed), _drop_timing(full_runs))
    assert list(pd.read_csv(out / "summary.csv")["run"]) == list(full_summary["run"])

    # A finished run with another config is never silently mixed in.
    changed = write_sweep(
        tmp_path / "s.toml",
        tiny_npz,
        grid={"train.lr": [0.001, 0.002, 0.003]},
        fixed={"train.epochs": 3},
    )
    assert main(["sweep", str(changed), "--quiet"]) == 2
    assert "holds a finished run with another config" in capsys.readouterr().err


def test_a_tune_run_from_before_validation_is_not_taken_for_a_finished_point(
    tiny_npz, tmp_path, capsys
):
    """A run folder whose config predates data.n_val ran without validation (and tested every
    epoch): resuming the sweep under the validation protocol must not count it as done."""
    toml = write_sweep(tmp_path / "s.toml", tiny_npz, grid={"train.lr": [0.001]})
    assert main(["sweep", str(toml), "--quiet"]) == 0
    saved = next(Path("results/sw/runs").iterdir()) / "config.toml"
    new_keys = ("n_val = ", "patience = ", "test_curve = ")
    lines = saved.read_text().splitlines()
    saved.write_text("\n".join(x for x in lines if not x.startswith(new_keys)) + "\n")
    assert main(["sweep", str(toml), "--quiet"]) == 2
    err = capsys.readouterr().err
    # test_curve's default equals this point's value: only its legacy value (true) tells them apart
    diff = "(data.n_val: 0 -> 12; train.test_curve: True -> False)"
    assert f"holds a finished run with another config {diff}" in err


def test_a_point_the_data_cannot_support_fails_at_planning(tiny_npz, tmp_path, capsys):
    # 120 images: n_train=120 leaves no test images, which only loading the data can tell.
    toml = write_sweep(tmp_path / "s.toml", tiny_npz, grid={"data.n_train": [60, 120]})
    assert main(["sweep", str(toml), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "n_train=120 leaves no test images" in err and "point 2: data.n_train=120" in err
    assert not Path("results/sw").exists()  # point 1 did not run first


def test_failed_point_is_recorded_and_exit_is_nonzero(tiny_npz, tmp_path, capsys):
    # A weights file that is not there: only building the backbone can tell.
    missing = str(tmp_path / "missing.safetensors")
    toml = write_sweep(tmp_path / "s.toml", tiny_npz, grid={"model.weights": [missing, "random"]})
    rc, info, err = _sweep(capsys, str(toml))
    assert rc == 1 and (info["ran"], info["failed"]) == (1, 1)
    first = info["failed_runs"][0]
    assert first.startswith("weights_")
    assert "[1/2] model.weights=" in err and "FAILED: " in err
    assert "[2/2] model.weights=random ... done in" in err
    summary = pd.read_csv("results/sw/summary.csv")
    assert list(summary["run"]) == [first, "weights_random"]
    assert summary["error"][0] and pd.isna(summary["error"][1])
    assert pd.isna(summary["test_acc"][0]) and summary["test_acc"][1] > 0
    assert set(pd.read_csv("results/sw/runs.csv")["run"]) == {"weights_random"}
    assert not Path("results/sw/runs", first).exists()
    # Started again: the failed point is tried again, the finished one is skipped.
    rc, info, _ = _sweep(capsys, str(toml))
    assert rc == 1 and (info["skipped"], info["failed"]) == (1, 1)


def test_study_scripts_build_their_sweeps():
    """The study scripts' configs load, and --quick shrinks them without touching the grid keys."""
    from pathlib import Path

    from miet_fed import study

    root = Path(__file__).resolve().parents[1]
    for name, quick_set in [
        ("sweep_gather", {"data.n_train": 100}),
        ("sweep_clients", {"fed.rounds": 2}),
    ]:
        full = study.build(root / "configs" / f"{name}.toml", False, [], quick_set)
        quick = study.build(root / "configs" / f"{name}.toml", True, ["train.epochs=1"], quick_set)
        assert quick.name == f"{full.name}-quick"
        assert all(quick.fixed[k] == v for k, v in quick_set.items())
        assert str(quick.fixed["train.epochs"]) == "1"  # typed later, by the config field


@pytest.mark.slow  # a sweep subprocess killed and rerun: tens of seconds
def test_sweep_killed_hard_resumes_to_the_same_table(tiny_npz, tmp_path):
    """SIGKILL a sweep in its second run, start it again: the table equals an uninterrupted one,
    and no half-written run is ever visible. The killed sweep is a process of its own; the
    reference and the resume run here (`main`, as the console script runs them)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    exe = str(Path(sys.executable).with_name("miet-fed"))
    grid = {"train.lr": [0.001, 0.002, 0.003], "train.epochs": [400]}  # ~2 s per run
    toml = write_sweep(tmp_path / "k.toml", tiny_npz, grid=grid)
    env = {**os.environ, "MIET_FED_CACHE": os.environ["MIET_FED_CACHE"]}
    assert main(["sweep", str(toml), "--out", "results/ref", "--quiet"]) == 0
    proc = subprocess.Popen(
        [exe, "sweep", str(toml), "--out", "results/cut", "--quiet"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    runs = Path("results/cut/runs")
    deadline = time.time() + 120
    while time.time() < deadline and not list(runs.glob("*/summary.json")):
        time.sleep(0.02)  # the first run just completed: the second is starting
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = list(runs.glob("*/summary.json"))
    assert 1 <= len(done) < 3, "the kill must land before the sweep finished"
    visible = [p for p in runs.iterdir() if not p.name.startswith(".")]
    assert all((p / "summary.json").exists() for p in visible)  # complete runs only
    assert main(["sweep", str(toml), "--out", "results/cut", "--quiet"]) == 0
    assert not [p for p in runs.iterdir() if p.name.startswith(".")]  # leftovers cleaned
    ref, cut = (pd.read_csv(Path(d) / "runs.csv") for d in ("results/ref", "results/cut"))
    drop = [c for c in ref.columns if c in TIMING or c.endswith("seconds")]
    pd.testing.assert_frame_equal(ref.drop(columns=drop), cut.drop(columns=drop))
