"""Nothing lost: run, sweep and report folders replace only what miet-fed provably wrote, a
run's identity is in its folder name, and two runs on one folder exclude each other.

Each data-loss case of issue 16 is a test here; each failed on the main of that time (a folder
holding a summary.json was replaced whole; sweep/report wrote into any folder; a sweep named
`..` wrote into the working directory; a second run deleted the first's temporary folder)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from miet_fed.cli import main
from miet_fed.config import SimulateConfig, TuneConfig
from miet_fed.results import MARKER, run_lock
from tests.conftest import TINY

MIET_FED = str(Path(sys.executable).with_name("miet-fed"))


def _tune_args(npz: Path, *extra: str) -> list[str]:
    return [
        "tune",
        "--dataset",
        f"npz:{npz}",
        *TINY,
        *("--set", "data.n_train=30", "--set", "data.n_test=30", "--set", "train.epochs=1"),
        *("--set", "data.n_val=6"),
        "--quiet",
        *extra,
    ]


def _one_line_error(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("miet-fed: error: ") and "\n" not in err, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
    return err


def _thesis(folder: Path, **extra: str) -> dict[str, str]:
    """A user's folder: a thesis next to whatever else (e.g. a stray summary.json)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"thesis.tex": "precious", **extra}
    for name, text in files.items():
        (folder / name).write_text(text)
    return files


def _unchanged(folder: Path, files: dict[str, str]) -> None:
    assert sorted(p.name for p in folder.iterdir()) == sorted(files)
    for name, text in files.items():
        assert (folder / name).read_text() == text


def test_a_summary_json_is_not_proof_of_a_run(tiny_npz, tmp_path, capsys):
    files = _thesis(tmp_path / "mine", **{"summary.json": "{}"})
    assert main(_tune_args(tiny_npz, "--out", str(tmp_path / "mine"))) == 2
    _one_line_error(capsys, "not a miet-fed run folder", MARKER)
    _unchanged(tmp_path / "mine", files)
    assert main(_tune_args(tiny_npz, "--out", str(tmp_path / "mine"), "--overwrite")) == 2
    _unchanged(tmp_path / "mine", files)  # --overwrite never replaces a folder that is not ours


def test_a_run_folder_with_a_users_file_in_it_is_not_replaced(tiny_npz, capsys):
    assert main(_tune_args(tiny_npz, "--out", "results/r")) == 0
    (Path("results/r") / "notes.md").write_text("my analysis")
    capsys.readouterr()
    assert main(_tune_args(tiny_npz, "--out", "results/r")) == 2
    _one_line_error(capsys, "notes.md", "did not write")
    assert (Path("results/r") / "notes.md").read_text() == "my analysis"


def test_other_settings_need_overwrite_same_settings_reuse(tiny_npz, capsys):
    assert main(_tune_args(tiny_npz, "--out", "results/r")) == 0
    first = json.loads((Path("results/r") / MARKER).read_text())
    assert first["kind"] == "run" and "summary.json" in first["files"]
    capsys.readouterr()
    assert main(_tune_args(tiny_npz, "--out", "results/r")) == 0  # same settings: replaced
    assert main(_tune_args(tiny_npz, "--out", "results/r", "--set", "train.lr=0.01")) == 2
    _one_line_error(capsys, "results/r holds a miet-fed run with other settings", "--overwrite")
    assert json.loads((Path("results/r") / MARKER).read_text())["identity"] == first["identity"]
    assert (
        main(_tune_args(tiny_npz, "--out", "results/r", "--set", "train.lr=0.01", "--overwrite"))
        == 0
    )
    assert json.loads((Path("results/r") / MARKER).read_text())["identity"] != first["identity"]


def test_default_name_carries_every_setting_that_changes_results(tiny_npz):
    from miet_fed.federation.runner import default_name as sim_name
    from miet_fed.results import run_identity
    from miet_fed.tuning import default_name as tune_name

    base = TuneConfig()
    lr = TuneConfig(train=type(base.train)(lr=0.5))
    quiet = TuneConfig(run=type(base.run)(progress=False, out="x", overwrite=True))
    assert tune_name(base) != tune_name(lr)  # lr is not in the readable part of the name
    assert tune_name(base) == tune_name(quiet)  # runtime-only settings do not count
    assert tune_name(base).endswith(run_identity("tune", base)[:8])
    sim = SimulateConfig()
    rounds = SimulateConfig(fed=type(sim.fed)(rounds=3))
    assert sim_name(sim) != sim_name(rounds)
    # a tune and a simulate of the same model settings never share an identity
    assert run_identity("tune", base) != run_identity("simulate", sim)


def test_default_folders_of_two_settings_both_survive(tiny_npz, capsys):
    assert main(_tune_args(tiny_npz)) == 0
    assert main(_tune_args(tiny_npz, "--set", "train.lr=0.01")) == 0
    runs = sorted(Path("results").iterdir())
    assert len(runs) == 2 and all((r / "summary.json").is_file() for r in runs)


def _sweep_file(tmp_path: Path, npz: Path, name: str = "sw") -> Path:
    text = f"""[sweep]
name = "{name}"
command = "tune"
[set]
"data.dataset" = "npz:{npz}"
"model.name" = "vit_tiny_patch16_224"
"model.weights" = "random"
"model.img_size" = 32
"data.n_train" = 30
"data.n_val" = 6
"data.n_test" = 30
"train.epochs" = 1
[grid]
"train.lr" = [0.001]
"""
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def test_sweep_out_never_writes_into_a_users_folder(tiny_npz, tmp_path, capsys):
    files = _thesis(tmp_path / "data", **{"runs.csv": "mine", "summary.csv": "mine too"})
    sweep = _sweep_file(tmp_path, tiny_npz)
    assert main(["sweep", str(sweep), "--out", str(tmp_path / "data"), "--quiet"]) == 2
    _one_line_error(capsys, "not a miet-fed folder")
    _unchanged(tmp_path / "data", files)


@pytest.mark.parametrize("name", ["..", "."])
def test_sweep_named_dot_dot_is_an_error(tiny_npz, tmp_path, capsys, name):
    Path("keep.txt").write_text("cwd file")
    sweep = _sweep_file(tmp_path, tiny_npz, name=name)
    assert main(["sweep", str(sweep), "--quiet"]) == 2
    _one_line_error(capsys)
    assert Path("keep.txt").read_text() == "cwd file" and not Path("runs").exists()


def test_sweep_out_dot_dot_is_an_error(tiny_npz, tmp_path, capsys):
    sweep = _sweep_file(tmp_path, tiny_npz)
    assert main(["sweep", str(sweep), "--out", "results/..", "--quiet"]) == 2
    _one_line_error(capsys, "does not name a folder")
    assert not Path("runs").exists()


def test_report_out_never_overwrites_a_users_folder(tiny_npz, tmp_path, capsys):
    assert main(_tune_args(tiny_npz, "--out", "results/r")) == 0
    files = _thesis(tmp_path / "figs", **{"report.md": "my own report"})
    capsys.readouterr()
    assert main(["report", "results/r", "--out", str(tmp_path / "figs")]) == 2
    _one_line_error(capsys, "not a miet-fed folder")
    _unchanged(tmp_path / "figs", files)
    assert main(["report", "results/r"]) == 0  # its own default folder: written, then rewritten
    assert main(["report", "results/r"]) == 0
    assert main(_tune_args(tiny_npz, "--out", "results/r")) == 0  # a run with its report: ours


HOLDER = """
import sys, time
from pathlib import Path
from miet_fed.results import run_lock
with run_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_a_second_run_on_a_locked_folder_stops_and_leaves_the_first_alone(tiny_npz, capsys):
    """Another process holds the folder's lock (a real flock) and has its temporary folder
    next to it: a second run says so in one line and deletes nothing."""
    out = Path("results/r")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        first_tmp = out.parent / ".r.tmp-0123abcd"
        first_tmp.mkdir()
        (first_tmp / "rounds.csv").write_text("round\n1\n")
        assert main(_tune_args(tiny_npz, "--out", str(out))) == 2
        _one_line_error(capsys, "being written by another miet-fed run", f"pid {holder.pid}")
        assert (first_tmp / "rounds.csv").read_text() == "round\n1\n"
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    first_tmp.rename(out.parent / "kept")
    assert main(_tune_args(tiny_npz, "--out", str(out))) == 0  # released: runs now
    assert not list(out.parent.glob(".r.lock"))  # the lock file is gone with its holder


def test_lock_is_reentrant_within_a_thread_and_exclusive_across_threads(tmp_path):
    import threading

    from miet_fed.errors import MietError

    out = tmp_path / "x"
    errors: list[str] = []

    def other() -> None:
        try:
            with run_lock(out):
                pass
        except MietError as exc:
            errors.append(str(exc))

    with run_lock(out), run_lock(out):
        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert len(errors) == 1 and "being written by another miet-fed run" in errors[0]
    with run_lock(out):  # released: free again
        pass


@pytest.mark.slow
def test_two_simulations_on_one_folder(tmp_path):
    """Two real `miet-fed simulate` with the same --out: the second stops at once with one line,
    the first finishes (before: the second deleted the first's temporary folder, and the first
    died with a traceback)."""
    from tests.conftest import brightness_npz

    npz = brightness_npz(tmp_path / "d.npz", 120, seed=1)
    cmd = [
        MIET_FED,
        "simulate",
        "--dataset",
        f"npz:{npz}",
        *TINY,
        "--quiet",
        "--out",
        str(tmp_path / "run"),
        *("--set", "data.n_train=80", "--set", "data.n_test=20", "--set", "fed.num_clients=2"),
        *("--set", "fed.rounds=2", "--set", "fed.partition=iid"),
    ]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob(".run.tmp-*")):
        time.sleep(0.1)
    assert list(tmp_path.glob(".run.tmp-*")), "the first run never started writing"
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert lines and "being written by another miet-fed run" in lines[-1], second.stderr
    assert "Traceback" not in second.stderr
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    assert (tmp_path / "run" / "summary.json").is_file()


@pytest.mark.slow
def test_damaged_checkpoint_is_set_aside_and_the_run_starts_over(tmp_path, capsys):
    """An empty server.json (a power loss mid-write) used to make every rerun die with a
    traceback that never named the hidden checkpoint folder."""
    from miet_fed.config import load_config, parse_overrides
    from miet_fed.federation.checkpoint import checkpoint_dir, open_checkpoint
    from tests.conftest import brightness_npz

    npz = brightness_npz(tmp_path / "d.npz", 120, seed=1)
    sets = ["data.n_train=80", "data.n_test=20", "fed.num_clients=2", "fed.rounds=2"]
    sets += ["fed.partition=iid", "run.progress=false"]
    flags = {"data.dataset": f"npz:{npz}", "model.name": "vit_tiny_patch16_224"}
    flags |= {"model.weights": "random", "model.img_size": "32"}
    cfg = load_config(
        SimulateConfig, None, parse_overrides([*sets, *(f"{k}={v}" for k, v in flags.items())])
    )
    out = Path("results/run")
    path, _ = open_checkpoint(out, cfg)
    (Path(path) / "server.json").write_text("")  # the commit point, cut by a power loss
    argv = ["simulate", "--dataset", f"npz:{npz}", *TINY, "--out", str(out), "--quiet", "--json"]
    argv += [arg for s in sets[:-1] for arg in ("--set", s)]
    capsys.readouterr()
    assert main(argv) == 0
    captured = capsys.readouterr()
    notice = [ln for ln in captured.err.splitlines() if "set aside" in ln]
    assert len(notice) == 1 and str(checkpoint_dir(out).absolute()) in notice[0], captured.err
    assert json.loads(captured.out.strip().splitlines()[-1])["resumed_after_round"] == 0
    assert list(Path("results").glob(".run.ckpt.damaged-*"))  # kept for inspection
    assert not checkpoint_dir(out).exists()  # the fresh one is gone with the finished run
