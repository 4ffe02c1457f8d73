"""Red team: inputs and faults a user can cause, each ending in one line and a non-zero exit, or
in a correct run; never a traceback, a hang, a NaN result or a lost file.

Run apart with `pytest -m redteam` (about two minutes on two cores). Every case goes through the
real CLI entry point (`miet_fed.cli.main`, in-process, or the console script where a signal or a
second process is part of the case) with a tiny random ViT; nothing is mocked. Each test also
checks that the sentinel files a user keeps next to their runs are intact: "data lost" counts
cases where one was changed or removed.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from miet_fed.cli import main
from tests.conftest import TINY, make_tiny_npz

pytestmark = pytest.mark.redteam

MIET_FED = str(Path(sys.executable).with_name("miet-fed"))
FAST = ["--set", "data.n_train=30", "--set", "data.n_test=30", "--set", "train.epochs=1"]
TUNE_FAST = [*FAST, "--set", "data.n_val=6"]  # tune validates on 6 of the 30
SIM = ["--set", "fed.rounds=1", "--set", "fed.num_clients=2"]


# --------------------------------------------------------------------------- harness


@pytest.fixture(scope="module")
def _module_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("redteam-cache")


@pytest.fixture(autouse=True)
def _shared_cache(_module_cache, monkeypatch):
    """One feature cache for the module (the tiny dataset and random ViT are the same in every
    case, so features are computed once); cases about the cache use their own."""
    monkeypatch.setenv("MIET_FED_CACHE", str(_module_cache))


def _own_cache(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("MIET_FED_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _sentinels(root: Path) -> dict[Path, str]:
    """Files a user keeps around: in the working directory, in results/ and next to the data."""
    files = {
        root / "thesis.tex": "precious",
        root / "results" / "notes.md": "my notes",
        root / "data" / "README.txt": "where the data came from",
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return files


def _intact(files: dict[Path, str]) -> None:
    lost = [str(p) for p, text in files.items() if not p.is_file() or p.read_text() != text]
    assert not lost, f"data lost: {lost}"


def _outcome(rc: int, err: str, out: str) -> str:
    """'error' (one line, non-zero) or 'ran' (exit 0, finite numbers); anything else fails."""
    assert "Traceback" not in err, err[-3000:]
    if rc == 0:
        last = out.strip().splitlines()[-1] if out.strip() else "{}"
        summary = json.loads(last) if last.startswith("{") else {}
        bad = [k for k, v in summary.items() if isinstance(v, float) and not math.isfinite(v)]
        assert not bad, f"non-finite results written: {bad}"
        return "ran"
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert rc != 0 and lines, (rc, err)
    last = lines[-1]
    assert last.startswith(("miet-fed: error: ", "miet-fed ")), err[-2000:]
    assert len(last) < 600, last
    return "error"


def _cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse
        rc = exc.code if isinstance(exc.code, int) else 2
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _check(capsys, tmp_path: Path, argv: list[str], expect: str, fragment: str = "") -> str:
    files = _sentinels(tmp_path)
    rc, out, err = _cli(capsys, [*argv, "--quiet"] + (["--json"] if argv[0] != "report" else []))
    got = _outcome(rc, err, out)
    _intact(files)
    assert got == expect, (got, err[-1500:])
    if fragment:
        assert fragment in (err if got == "error" else out), err[-1500:]
    return got


def _npz(tmp_path: Path) -> str:
    (tmp_path / "data").mkdir(exist_ok=True)
    return f"npz:{make_tiny_npz(tmp_path / 'data' / 'tiny.npz')}"


def _tune(tmp_path: Path, *extra: str) -> list[str]:
    return ["tune", "--dataset", _npz(tmp_path), *TINY, *TUNE_FAST, *extra]


# --------------------------------------------------------------------------- config values

#: --set / flag values: (argv after the command's tiny base, expected outcome, fragment)
CONFIG_CASES: dict[str, tuple[list[str], str, str]] = {
    "set without =": (["--set", "train.lr"], "error", "section.key=value"),
    "set without section": (["--set", "lr=0.1"], "error", "section.key=value"),
    "unknown section": (["--set", "trian.lr=0.1"], "error", "unknown section"),
    "n_train negative": (["--set", "data.n_train=-5"], "error", "data.n_train"),
    "n_train float": (["--set", "data.n_train=1e3"], "error", "integer"),
    "n_train nan": (["--set", "data.n_train=nan"], "error", "integer"),
    "lr nan": (["--set", "train.lr=nan"], "error", "train.lr"),
    "lr inf": (["--set", "train.lr=inf"], "error", "train.lr"),
    "lr negative": (["--set", "train.lr=-1"], "error", "train.lr"),
    "lr text": (["--set", "train.lr=fast"], "error", "number"),
    "weight decay -inf": (["--set", "train.weight_decay=-inf"], "error", "weight_decay"),
    "epochs zero": (["--set", "train.epochs=0"], "error", "train.epochs"),
    "batch zero": (["--set", "train.batch_size=0"], "error", "batch_size"),
    "img size 15": (["--img-size", "15"], "error", "img_size"),
    "img size text": (["--img-size", "big"], "error", "integer"),
    "img size not a patch multiple": (["--img-size", "33"], "ran", ""),
    "k negative": (["--k", "-1"], "error", "model.k"),
    "k fraction": (["--k", "1.5"], "error", "integer"),
    "rank zero": (["--set", "edge.rank=0"], "error", "edge.rank"),
    "rank not divisible by heads": (["--set", "edge.heads=3"], "error", "divisible"),
    "pool max": (["--set", "edge.pool=max"], "error", "edge.pool"),
    "dtype upper case": (["--set", "model.dtype=FP16"], "error", "dtype"),
    "checkpoint maybe": (["--set", "run.checkpoint=maybe"], "error", "true or false"),
    "seed text": (["--seed", "abc"], "error", "integer"),
    "seed negative": (["--seed", "-1"], "error", "run.seed"),
    "seed huge": (["--seed", str(2**70)], "error", "run.seed"),
    "seed largest": (["--seed", str(2**32 - 1)], "ran", ""),
    "empty dataset": (["--dataset", ""], "error", ""),
    "empty model": (["--model", ""], "error", ""),
    "empty weights": (["--weights", ""], "error", ""),
    "not a ViT": (["--model", "resnet18"], "error", "VisionTransformer"),
    "timm pretrained tag": (["--model", "vit_tiny_patch16_224.augreg_in21k"], "error", "timm"),
    "distilled two-token ViT": (["--model", "deit_tiny_distilled_patch16_224"], "ran", ""),
    "unknown gather": (["--gather", "max"], "error", "gather"),
    "device tpu": (["--set", "model.device=tpu"], "error", "model.device"),
    "gather cls with lae": (["--gather", "cls"], "error", "--edge linear"),
    "k zero": (["--k", "0"], "ran", ""),
    "one epoch int8": (["--set", "model.dtype=int8"], "ran", ""),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_config_value(case, tmp_path, capsys):
    args, expect, fragment = CONFIG_CASES[case]
    _check(capsys, tmp_path, _tune(tmp_path, *args), expect, fragment)


SIMULATE_CASES: dict[str, tuple[list[str], str, str]] = {
    "clients negative": (["--set", "fed.num_clients=-1"], "error", "num_clients"),
    "rounds zero": (["--set", "fed.rounds=0"], "error", "fed.rounds"),
    "alpha zero": (["--set", "fed.alpha=0"], "error", "alpha"),
    "alpha nan": (["--set", "fed.alpha=nan"], "error", "alpha"),
    "test fraction one": (["--set", "fed.test_fraction=1"], "error", "test_fraction"),
    "test fraction zero": (["--set", "fed.test_fraction=0"], "error", "test_fraction"),
    "cpus per client zero": (["--set", "fed.cpus_per_client=0"], "error", "cpus_per_client"),
    "cpus per client beyond the machine": (
        ["--set", "fed.cpus_per_client=4096"],
        "error",
        "cpus_per_client",
    ),
    "link latency nan": (["--set", "link.latency_ms=nan"], "error", "latency"),
    "link spread negative": (["--set", "link.spread=-1"], "error", "spread"),
    "strategy upper case": (["--set", "fed.strategy=FedAvg"], "error", "strategy"),
    "classes per client zero": (
        ["--set", "fed.partition=pathological", "--set", "fed.classes_per_client=0"],
        "error",
        "classes_per_client",
    ),
    "ray address that refuses": (["--ray-address", "127.0.0.1:1"], "error", "Ray cluster"),
    "ray address garbage": (["--ray-address", "no such host:99999"], "error", ""),
}


@pytest.mark.parametrize("case", sorted(SIMULATE_CASES))
def test_simulate_value(case, tmp_path, capsys):
    args, expect, fragment = SIMULATE_CASES[case]
    argv = ["simulate", "--dataset", _npz(tmp_path), *TINY, *FAST, *SIM, *args]
    _check(capsys, tmp_path, argv, expect, fragment)


# --------------------------------------------------------------------------- config files

TINY_TOML = """# tiny
[data]
n_train = 30
n_val = 6
n_test = 30
[model]
name = "vit_tiny_patch16_224"
weights = "random"
img_size = 32
[train]
epochs = 1
"""


def _write_config(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


CONFIG_FILES: dict[str, tuple[Callable[[Path], bytes | None], str]] = {
    "utf-8": (lambda t: TINY_TOML.encode(), "ran"),
    "utf-8 with BOM": (lambda t: b"\xef\xbb\xbf" + TINY_TOML.encode(), "ran"),
    "CRLF line ends": (lambda t: TINY_TOML.replace("\n", "\r\n").encode(), "ran"),
    "utf-16": (lambda t: TINY_TOML.encode("utf-16"), "error"),
    "latin-1 comment": (lambda t: ("# r\xe9sum\xe9\n" + TINY_TOML).encode("latin-1"), "error"),
    "utf-8 comment": (lambda t: ("# r\xe9sum\xe9 \u2713\n" + TINY_TOML).encode(), "ran"),
    "binary garbage": (lambda t: bytes(range(256)) * 4, "error"),
    "empty file": (lambda t: b"", "error-or-ran"),
    "duplicate key": (lambda t: (TINY_TOML + "[train]\nepochs = 2\n").encode(), "error"),
    "string for int": (lambda t: TINY_TOML.replace("epochs = 1", 'epochs = "1"').encode(), "error"),
    "array for scalar": (
        lambda t: TINY_TOML.replace("epochs = 1", "epochs = [1]").encode(),
        "error",
    ),
    "nested table": (lambda t: (TINY_TOML + "[model.extra]\na = 1\n").encode(), "error"),
    "top-level key": (lambda t: ("seed = 1\n" + TINY_TOML).encode(), "error"),
    "inf literal": (lambda t: (TINY_TOML + "lr = inf\n").encode(), "error"),
    "nan literal": (lambda t: (TINY_TOML + "weight_decay = nan\n").encode(), "error"),
    "bool for int": (lambda t: TINY_TOML.replace("epochs = 1", "epochs = true").encode(), "error"),
    "out escapes results": (
        lambda t: (TINY_TOML + '[run]\nout = "results/../.."\n').encode(),
        "error",
    ),
    "out is results itself": (lambda t: (TINY_TOML + '[run]\nout = "results"\n').encode(), "error"),
    "a directory": (lambda t: None, "error"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_FILES))
def test_config_file(case, tmp_path, capsys):
    build, expect = CONFIG_FILES[case]
    data = build(tmp_path)
    path = tmp_path / "c.toml"
    if data is None:
        path.mkdir()
    else:
        path.write_bytes(data)
    argv = ["tune", str(path), "--dataset", _npz(tmp_path)]
    if case == "empty file":  # the built-in defaults: keep them tiny from the command line
        argv += [*TINY, *TUNE_FAST]
    files = _sentinels(tmp_path)
    rc, out, err = _cli(capsys, [*argv, "--quiet", "--json"])
    got = _outcome(rc, err, out)
    _intact(files)
    assert expect == "error-or-ran" or got == expect, (got, err[-1500:])


# --------------------------------------------------------------------------- paths

PATH_CASES: dict[str, tuple[Callable[[Path], list[str]], str, str]] = {
    "out is a file": (lambda t: ["--out", str(t / "thesis.tex")], "error", "is a file"),
    "out is a link": (lambda t: ["--out", str(_link(t))], "error", "link"),
    "out is cwd": (lambda t: ["--out", "."], "error", "not a miet-fed run folder"),
    "out is root": (lambda t: ["--out", "/"], "error", "not a miet-fed run folder"),
    "out is the data folder": (lambda t: ["--out", str(t / "data")], "error", "not a miet-fed"),
    "out is results/": (lambda t: ["--out", "results"], "error", "not a miet-fed run folder"),
    "out under /proc": (lambda t: ["--out", "/proc/miet-fed/run"], "error", "cannot"),
    "out with a NUL byte": (lambda t: ["--out", "res\x00ults/x"], "error", ""),
    "out name too long": (lambda t: ["--out", "results/" + "x" * 300], "error", ""),
    "out unicode name": (lambda t: ["--out", "results/r\u00e9sultat \u2713"], "ran", ""),
    "out with spaces": (lambda t: ["--out", "results/my run"], "ran", ""),
    "out tilde": (lambda t: ["--out", "~/../" + str(t.relative_to("/")) + "/results/t"], "ran", ""),
    "dataset npz missing": (lambda t: ["--dataset", f"npz:{t}/nope.npz"], "error", "not found"),
    "dataset npz is a folder": (lambda t: ["--dataset", f"npz:{t}/data"], "error", ""),
    "dataset npz is /dev/null": (lambda t: ["--dataset", "npz:/dev/null"], "error", ""),
    "dataset npz empty file": (lambda t: ["--dataset", f"npz:{_empty(t)}"], "error", ""),
    "dataset npz is a zip of text": (lambda t: ["--dataset", f"npz:{_zip(t)}"], "error", ""),
    "dataset npz with NUL": (lambda t: ["--dataset", "npz:a\x00b.npz"], "error", ""),
    "dataset folder is a file": (lambda t: ["--dataset", f"folder:{t}/thesis.tex"], "error", ""),
    "dataset with unknown prefix": (lambda t: ["--dataset", f"csv:{t}/x.csv"], "error", ""),
    "weights is a folder": (lambda t: ["--weights", str(t / "data")], "error", ""),
    "weights is /dev/null": (lambda t: ["--weights", "/dev/null"], "error", ""),
    "weights empty .safetensors": (
        lambda t: ["--weights", str(_empty(t, "w.safetensors"))],
        "error",
        "",
    ),
    "weights of another model": (lambda t: ["--weights", _other_weights(t)], "error", ""),
    "cache is a file": (lambda t: _env("MIET_FED_CACHE", str(t / "thesis.tex")), "error", ""),
    "cache under /proc": (lambda t: _env("MIET_FED_CACHE", "/proc/miet-fed-cache"), "error", ""),
}


def _env(name: str, value: str) -> list[str]:
    os.environ[name] = value  # the autouse fixture's monkeypatch restores MIET_FED_CACHE
    return []


def _link(t: Path) -> Path:
    (t / "elsewhere").mkdir(exist_ok=True)
    link = t / "link"
    if not link.is_symlink():
        link.symlink_to(t / "elsewhere")
    return link


def _empty(t: Path, name: str = "empty.npz") -> Path:
    (t / name).write_bytes(b"")
    return t / name


def _zip(t: Path) -> Path:
    import zipfile

    with zipfile.ZipFile(t / "text.npz", "w") as z:
        z.writestr("x.txt", "hello")
    return t / "text.npz"


def _other_weights(t: Path) -> str:
    import torch
    from safetensors.torch import save_file

    save_file({"blocks.0.attn.qkv.weight": torch.zeros(3, 3)}, str(t / "other.safetensors"))
    return str(t / "other.safetensors")


@pytest.mark.parametrize("case", sorted(PATH_CASES))
def test_path(case, tmp_path, capsys):
    build, expect, fragment = PATH_CASES[case]
    extra = build(tmp_path)
    _check(capsys, tmp_path, _tune(tmp_path, *extra), expect, fragment)


# --------------------------------------------------------------------------- data


def _folder(t: Path, images: dict[str, list[np.ndarray]], suffix: str = ".png") -> str:
    from PIL import Image

    for cls, arrays in images.items():
        (t / "imgs" / cls).mkdir(parents=True, exist_ok=True)
        for i, a in enumerate(arrays):
            Image.fromarray(a).save(t / "imgs" / cls / f"{i}{suffix}")
    return f"folder:{t / 'imgs'}"


def _levels(dtype: type, levels: tuple[float, float], n: int = 10) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    return {
        f"c{c}": [(rng.random((16, 16)) * 0.1 + level).astype(dtype) for _ in range(n)]
        for c, level in enumerate(levels)
    }


DATA_CASES: dict[str, tuple[Callable[[Path], list[str]], str, str]] = {
    "one class only": (
        lambda t: ["--dataset", _folder(t, {"a": [np.zeros((8, 8), np.uint8)] * 4})],
        "error",
        "",
    ),
    "empty class folder": (lambda t: ["--dataset", _empty_class(t)], "error", "no images"),
    "zero-byte image": (lambda t: ["--dataset", _zero_image(t)], "error", "cannot read image"),
    "float TIFF beyond 0..1": (
        lambda t: ["--dataset", _folder(t, _levels(np.float32, (10.0, 200.0)), ".tif")],
        "error",
        "0..1",
    ),
    "float TIFF with NaN": (lambda t: ["--dataset", _nan_tiff(t)], "error", "NaN"),
    "32-bit integer TIFF": (
        lambda t: ["--dataset", _folder(t, _levels(np.int32, (1.0, 9.0)), ".tif")],
        "error",
        "32-bit integer",
    ),
    "npz with too few images": (lambda t: ["--dataset", _small_npz(t, 3)], "error", ""),
    "npz 4 channels": (lambda t: ["--dataset", _npz_shape(t, (20, 8, 8, 4))], "error", ""),
    "npz 1x1 images": (lambda t: ["--dataset", _npz_shape(t, (20, 1, 1))], "ran", ""),
    "npz huge label values": (lambda t: ["--dataset", _npz_labels(t, 10**12)], "error-or-ran", ""),
    "image bomb": (lambda t: ["--dataset", _bomb(t)], "error", ""),
}


def _empty_class(t: Path) -> str:
    spec = _folder(t, {"a": [np.zeros((8, 8), np.uint8)] * 3, "b": [np.ones((8, 8), np.uint8)] * 3})
    (t / "imgs" / "c").mkdir()
    return spec


def _zero_image(t: Path) -> str:
    spec = _folder(t, {"a": [np.zeros((8, 8), np.uint8)] * 3, "b": [np.ones((8, 8), np.uint8)] * 3})
    (t / "imgs" / "a" / "bad.png").write_bytes(b"")
    return spec


def _nan_tiff(t: Path) -> str:
    images = _levels(np.float32, (0.1, 0.8))
    images["c0"][0][0, 0] = np.nan
    return _folder(t, images, ".tif")


def _small_npz(t: Path, n: int) -> str:
    np.savez(t / "s.npz", x=np.zeros((n, 8, 8), np.uint8), y=np.arange(n) % 2)
    return f"npz:{t / 's.npz'}"


def _npz_shape(t: Path, shape: tuple[int, ...]) -> str:
    n = shape[0]
    x = (np.arange(int(np.prod(shape))) % 251).astype(np.uint8).reshape(shape)
    np.savez(t / "s.npz", x=x, y=np.arange(n) % 2)
    return f"npz:{t / 's.npz'}"


def _npz_labels(t: Path, top: int) -> str:
    y = np.where(np.arange(60) % 2 == 0, 0, top).astype(np.int64)
    x = (np.arange(60 * 64) % 251).astype(np.uint8).reshape(60, 8, 8)
    np.savez(t / "s.npz", x=x, y=y)
    return f"npz:{t / 's.npz'}"


def _bomb(t: Path) -> str:
    from PIL import Image

    for cls in ("a", "b"):
        (t / "imgs" / cls).mkdir(parents=True)
        Image.new("L", (8, 8)).save(t / "imgs" / cls / "0.png")
    Image.new("1", (20000, 20000)).save(t / "imgs" / "a" / "big.png")  # 400 Mpx, tiny file
    return f"folder:{t / 'imgs'}"


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_data(case, tmp_path, capsys):
    build, expect, fragment = DATA_CASES[case]
    extra = build(tmp_path)
    argv = ["tune", *TINY, "--set", "train.epochs=1", *extra]
    if "npz 1x1" in case or "huge label" in case:
        argv += ["--set", "data.n_train=10", "--set", "data.n_val=2", "--set", "data.n_test=10"]
    files = _sentinels(tmp_path)
    rc, out, err = _cli(capsys, [*argv, "--quiet", "--json"])
    got = _outcome(rc, err, out)
    _intact(files)
    if expect != "error-or-ran":
        assert got == expect, (got, err[-1500:])
    if fragment:
        assert fragment in err, err


# --------------------------------------------------------------------------- sweep and report

SWEEP = """[sweep]
name = "{name}"
command = "tune"
[set]
"data.dataset" = "{dataset}"
"model.name" = "vit_tiny_patch16_224"
"model.weights" = "random"
"model.img_size" = 32
"data.n_train" = 30
"data.n_val" = 6
"data.n_test" = 30
"train.epochs" = 1
[grid]
"train.lr" = {grid}
"""

SWEEP_CASES: dict[str, tuple[str, str, list[str], str]] = {
    "name ..": ("..", "[0.001]", [], "error"),
    "name .": (".", "[0.001]", [], "error"),
    "name with slash": ("a/b", "[0.001]", [], "error"),
    "name empty": ("", "[0.001]", [], "error"),
    "empty grid": ("sw", "[]", [], "error"),
    "grid of strings for a float": ("sw", '["fast"]', [], "error"),
    "grid with nan": ("sw", "[nan]", [], "error"),
    "out is a user folder": ("sw", "[0.001]", ["--out", "data"], "error"),
    "out ..": ("sw", "[0.001]", ["--out", ".."], "error"),
    "a plain run": ("sw", "[0.001]", [], "ran"),
}


@pytest.mark.parametrize("case", sorted(SWEEP_CASES))
def test_sweep(case, tmp_path, capsys):
    name, grid, extra, expect = SWEEP_CASES[case]
    path = tmp_path / "s.toml"
    path.write_text(SWEEP.format(name=name, dataset=_npz(tmp_path), grid=grid))
    files = _sentinels(tmp_path)
    rc, out, err = _cli(capsys, ["sweep", str(path), "--quiet", *extra])
    assert "Traceback" not in err, err
    got = "ran" if rc == 0 else "error"
    if got == "error":
        last = err.strip().splitlines()[-1]
        assert last.startswith(("miet-fed: error: ", "miet-fed sweep: error")), err
    _intact(files)
    assert got == expect, (got, err[-1500:])


REPORT_CASES: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "folder missing": (lambda t: [str(t / "nope")], "error"),
    "a user folder": (lambda t: [str(t / "data")], "error"),
    "a file": (lambda t: [str(t / "thesis.tex")], "error"),
    "out into a user folder": (lambda t: [_a_run(t), "--out", str(t / "data")], "error"),
    "out is a file": (lambda t: [_a_run(t), "--out", str(t / "thesis.tex")], "error"),
    "out ..": (lambda t: [_a_run(t), "--out", ".."], "error"),
    "a run, twice": (lambda t: [_a_run(t)], "ran"),
}


def _a_run(t: Path) -> str:
    assert main(_tune(t, "--out", str(t / "results" / "r"), "--quiet")) == 0
    return str(t / "results" / "r")


@pytest.mark.parametrize("case", sorted(REPORT_CASES))
def test_report(case, tmp_path, capsys):
    build, expect = REPORT_CASES[case]
    files = _sentinels(tmp_path)
    args = build(tmp_path)
    rc, out, err = _cli(capsys, ["report", *args])
    if case == "a run, twice":
        rc, out, err = _cli(capsys, ["report", *args])
    assert "Traceback" not in err, err
    got = "ran" if rc == 0 else "error"
    if got == "error":
        assert err.strip().splitlines()[-1].startswith("miet-fed: error: "), err
    _intact(files)
    assert got == expect, (got, err[-1500:])


# --------------------------------------------------------------------------- cache


def _warm_cache(tmp_path: Path, capsys) -> Path:
    assert main([*_tune(tmp_path), "--out", "results/warm", "--quiet"]) == 0
    capsys.readouterr()
    shards = sorted((Path(os.environ["MIET_FED_CACHE"]) / "features").glob("*/shard-*"))
    assert shards
    return shards[0]


def _truncate(shard: Path) -> None:
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])


def _flip(shard: Path) -> None:
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF
    shard.write_bytes(bytes(data))


def _emptied(shard: Path) -> None:
    shard.write_bytes(b"")


def _vanished_mount(shard: Path) -> None:
    target = shard.parent.parent.parent / "gone" / shard.name
    shard.unlink()
    shard.symlink_to(target)


def _foreign_copy(shard: Path) -> None:
    import torch
    from safetensors.torch import save_file

    ids = torch.arange(1000, 1004)
    save_file({"ids": ids, "x": torch.zeros(4, 3)}, str(shard.with_name("shard-f00.safetensors")))


def _key_json_garbage(shard: Path) -> None:
    (shard.parent / "key.json").write_text("{not json")


CACHE_CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated shard": (_truncate, "ran"),
    "bit-flipped shard": (_flip, "ran"),
    "emptied shard": (_emptied, "ran"),
    "shard on a vanished mount": (_vanished_mount, "error"),
    "unbound shard copied in": (_foreign_copy, "ran"),
    "garbage key.json": (_key_json_garbage, "ran"),
}


@pytest.mark.parametrize("case", sorted(CACHE_CASES))
def test_cache(case, tmp_path, capsys, monkeypatch):
    _own_cache(tmp_path, monkeypatch)
    shard = _warm_cache(tmp_path, capsys)
    damage, expect = CACHE_CASES[case]
    damage(shard)
    got = _check(capsys, tmp_path, _tune(tmp_path, "--out", "results/again"), expect)
    if case == "shard on a vanished mount":
        assert shard.is_symlink()  # kept: an I/O error is not damage
    if got == "ran":
        again = json.loads((Path("results/again") / "summary.json").read_text())
        warm = json.loads((Path("results/warm") / "summary.json").read_text())
        assert again["test_acc"] == warm["test_acc"]  # features rebuilt or reused, not wrong


# --------------------------------------------------------------------------- checkpoint


def _ckpt(tmp_path: Path):
    """A checkpoint of two committed rounds, written by the real writers."""
    import torch

    from miet_fed.config import SimulateConfig
    from miet_fed.federation import checkpoint as ck
    from miet_fed.federation.device_store import DeviceStore
    from tests.test_checkpoint import _record

    cfg = SimulateConfig()
    out = tmp_path / "results" / "run"
    path, _ = ck.open_checkpoint(out, cfg)
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"round": 1}\n')
    store = DeviceStore(Path(path) / ck.CLIENTS)
    store.save(0, 1, {"net": {"w": torch.ones(3)}})
    store.save(1, 2, {"net": {"w": torch.zeros(3)}})
    registry = {"last_round": np.array([1, 2]), "contact": np.array([1, 1])}
    ck.save_server(path, 2, _record(0), {}, registry, rows)
    return ck, cfg, out, Path(path), store


CKPT_DAMAGE: dict[str, Callable[[Path], None]] = {
    "empty server.json": lambda p: (p / "server.json").write_text(""),
    "server.json not JSON": lambda p: (p / "server.json").write_text("{round: 2"),
    "server.json without a round": lambda p: (p / "server.json").write_text('{"r": 2}'),
    "server.json round text": lambda p: (p / "server.json").write_text('{"round": "2"}'),
    "server.json a list": lambda p: (p / "server.json").write_text("[2]"),
    "truncated server state": lambda p: _truncate(p / "server-r2.safetensors"),
    "missing server state": lambda p: (p / "server-r2.safetensors").unlink(),
    "missing rows": lambda p: (p / "rows-r2.jsonl").unlink(),
    "rows not JSON": lambda p: (p / "rows-r2.jsonl").write_text("{half"),
    "truncated device state": lambda p: _truncate(_device_file(p, 1, 2)),
    "empty device state": lambda p: _device_file(p, 0, 1).write_bytes(b""),
    "data.json empty": lambda p: (p / "data.json").write_text(""),
}


def _device_file(p: Path, device: int, server_round: int) -> Path:
    from miet_fed.federation.device_store import DeviceStore

    return DeviceStore(p / "devices").path(device, server_round)


@pytest.mark.parametrize("case", sorted(CKPT_DAMAGE))
def test_damaged_checkpoint_is_set_aside(case, tmp_path, capsys):
    ck, cfg, out, path, _ = _ckpt(tmp_path)
    CKPT_DAMAGE[case](path)
    capsys.readouterr()
    new_path, last = ck.open_checkpoint(out, cfg)
    err = capsys.readouterr().err.strip()
    assert last == 0 and Path(new_path) == path and not (path / "server.json").exists()
    assert err.count("\n") == 0 and str(path) in err and "set aside" in err, err
    aside = list(path.parent.glob(f"{path.name}.damaged-*"))
    assert len(aside) == 1 and (aside[0] / "config.json").exists()  # kept, not deleted


def test_intact_checkpoint_resumes(tmp_path, capsys):
    ck, cfg, out, path, store = _ckpt(tmp_path)
    assert ck.open_checkpoint(out, cfg) == (str(path), 2)
    assert "damaged" not in capsys.readouterr().err
    assert store.load(1, 2)["net"]["w"].tolist() == [0.0, 0.0, 0.0]


def test_checkpoint_folder_that_is_a_file(tmp_path, capsys):
    from miet_fed.config import SimulateConfig
    from miet_fed.federation import checkpoint as ck

    out = tmp_path / "results" / "run"
    out.parent.mkdir(parents=True)
    ck.checkpoint_dir(out).write_text("not a folder")
    path, last = ck.open_checkpoint(out, SimulateConfig())
    assert last == 0 and Path(path).is_dir()
    assert "set aside" in capsys.readouterr().err


# --------------------------------------------------------------------------- faults and concurrency


def _spawn(argv: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [MIET_FED, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw
    )


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143)])
def test_signal_mid_tune_leaves_nothing(sig, code, tmp_path, monkeypatch):
    _own_cache(tmp_path, monkeypatch)
    files = _sentinels(tmp_path)
    args = _tune(tmp_path, "--set", "train.epochs=100000", "--out", "results/long", "--quiet")
    proc = _spawn(args)
    deadline = time.time() + 60
    cache = Path(os.environ["MIET_FED_CACHE"]) / "features"
    while time.time() < deadline and not list(cache.glob("*/shard-*")):
        time.sleep(0.1)  # features cached: training has started
    time.sleep(0.5)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code and "Traceback" not in err, err[-2000:]
    assert len(err.strip().splitlines()) == 1, err
    assert not Path("results/long").exists() and not list(Path("results").glob(".long*"))
    _intact(files)


def test_two_tunes_at_once_on_one_folder(tmp_path, monkeypatch):
    """Two processes on one folder and one empty feature cache: both finish or the second says
    the folder is busy; the folder ends complete and the cache consistent."""
    _own_cache(tmp_path, monkeypatch)
    files = _sentinels(tmp_path)
    args = _tune(tmp_path, "--out", "results/same", "--quiet")
    procs = [_spawn(args) for _ in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert "Traceback" not in err, err[-2000:]
        assert p.returncode == 0 or "being written by another miet-fed run" in err, err
    assert (Path("results/same") / "summary.json").is_file()
    _intact(files)
    again = _tune(tmp_path, "--out", "results/after", "--quiet", "--json")
    rc = main(again)
    assert rc == 0
    first = json.loads((Path("results/same") / "summary.json").read_text())
    after = json.loads((Path("results/after") / "summary.json").read_text())
    assert after["backbone_forwards"] == 0 and after["test_acc"] == first["test_acc"]


def test_stale_lock_file_of_a_killed_run_is_no_obstacle(tmp_path, capsys):
    Path("results").mkdir()
    Path("results/.r.lock").write_text("99999999\n")  # left by a run killed with SIGKILL
    Path("results/.r.tmp-deadbeef").mkdir()  # and its temporary folder
    _check(capsys, tmp_path, _tune(tmp_path, "--out", "results/r"), "ran")
    assert not Path("results/.r.tmp-deadbeef").exists() and not Path("results/.r.lock").exists()


@pytest.fixture(params=["full", "read-only"])
def bad_disk(request, tmp_path):
    """A real full filesystem (a 64 KiB tmpfs filled to the last byte) or a read-only one
    (needs root; skipped where mounting is not allowed)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        with open(mount / "filler", "wb", buffering=0) as f:
            try:
                while request.param == "full":
                    f.write(b"\0" * 4096)
            except OSError:
                pass
        if request.param == "read-only":
            subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        yield mount, request.param
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.mark.parametrize("where", ["results", "cache"])
def test_full_or_read_only_disk_is_one_line(where, bad_disk, tmp_path, capsys, monkeypatch):
    disk, kind = bad_disk
    if where == "cache":
        monkeypatch.setenv("MIET_FED_CACHE", str(disk / "cache"))
        argv = _tune(tmp_path, "--out", "results/r")
    else:
        _own_cache(tmp_path, monkeypatch)
        argv = _tune(tmp_path, "--out", str(disk / "run"))
    why = "No space left on device" if kind == "full" else "Read-only file system"
    _check(capsys, tmp_path, argv, "error", why)
    assert sorted(p.name for p in disk.iterdir() if p.name != "cache") == ["filler"]
