"""Plugins from outside the package: an edge network, a gather function, a strategy with its own
parameter and a dataset, each in a file of a temporary folder, run through `tune`, `simulate`
and `cost` with `--plugin`, as a researcher would without forking.

Every command runs in its own process: a plugin registers for the rest of the process, and the
test session's registries must stay the built-in ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY

EDGE = '''
"""A mean-pooled MLP edge network (no stacked form: cohorts train it in a loop)."""
from torch import nn

from miet_fed.edge.networks import EDGE_NETWORKS, EdgeNetwork


@EDGE_NETWORKS.register("meanmlp")
class MeanMLP(EdgeNetwork):
    name = "meanmlp"
    accepts = ("tokens",)

    def __init__(self, dim, hidden, classes):
        super().__init__()
        self.body = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU())
        self.head = nn.Linear(hidden, classes)

    @classmethod
    def build(cls, payload_shape, num_classes, cfg):
        return cls(payload_shape[-1], cfg.rank, num_classes)

    def forward(self, x):
        return self.head(self.body(x.mean(dim=1)))
'''

GATHER = '''
"""The mean of z_0 .. z_k: Gather* scaled by 1/(k+1)."""
from miet_fed.cloud.gather import GATHERS, Gather


@GATHERS.register("mean")
class MeanGather(Gather):
    name = "mean"
    kind = "tokens"

    def payload_shape(self, tokens, dim, k):
        return (tokens, dim)

    def __call__(self, maps):
        out = maps[0].clone()
        for z in maps[1:]:
            out += z
        return out / len(maps)
'''

STRATEGY = '''
"""FedProx under another name, with its own parameter; notes where its parameter arrived."""
import os
from dataclasses import dataclass

from miet_fed.config import setting
from miet_fed.federation.strategies import STRATEGIES, FedStrategy

SEEN = {seen!r}


@dataclass(frozen=True)
class PullParams:
    mu: float = setting(0.05, "pull toward the global model", ge=0)


@STRATEGIES.register("pull")
class Pull(FedStrategy):
    name = "pull"
    summary = "FedAvg with a proximal pull of strength fed.pull.mu"
    Params = PullParams

    def local_update(self, job):
        with open(SEEN, "a") as f:
            f.write(f"strategy {{os.getpid()}} {{job.fed.params.mu}}\\n")
        return job.fit(prox_mu=job.fed.params.mu)
'''

DATASET = '''
"""Ninety 12x12 images in three classes told apart by brightness; notes who loaded it."""
import os

import numpy as np

from miet_fed.data.base import ImageDataset, short_hash
from miet_fed.data.datasets import DATASETS

SEEN = {seen!r}


@DATASETS.register("bright3")
def bright3():
    with open(SEEN, "a") as f:
        f.write(f"dataset {{os.getpid()}}\\n")
    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    x = (rng.integers(0, 60, size=(90, 12, 12)) + (y * 80)[:, None, None]).astype(np.uint8)
    return ImageDataset("bright3", x, y, ("dark", "mid", "light"), short_hash("bright3", 1))
'''


@pytest.fixture
def plugins(tmp_path: Path) -> tuple[list[str], Path]:
    """Four plugin files outside the package, and the file they note their processes in."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    seen = tmp_path / "seen.txt"
    texts = {
        "my_edge.py": EDGE,
        "my_gather.py": GATHER,
        "my_strategy.py": STRATEGY.format(seen=str(seen)),
        "my_data.py": DATASET.format(seen=str(seen)),
    }
    args = []
    for name, text in texts.items():
        (folder / name).write_text(text)
        args += ["--plugin", str(folder / name)]
    return args, seen


def _cli(*argv: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "miet_fed.cli", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _summary(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


TINY_DATA = ["--dataset", "bright3", "--gather", "mean", "--edge", "meanmlp", *TINY]


def test_tune_with_plugin_dataset_gather_and_edge_network(plugins):
    args, _ = plugins
    s = _summary(
        _cli(
            "tune",
            *args,
            *TINY_DATA,
            "--set",
            "data.n_train=30",
            "--set",
            "data.n_val=6",
            "--set",
            "data.n_test=30",
            "--set",
            "train.epochs=2",
            "--set",
            "edge.rank=8",
            "--quiet",
            "--json",
        )
    )
    assert (s["gather"], s["edge"]) == ("mean", "meanmlp")
    assert 0 <= s["test_acc"] <= 1
    # the run's config names its plugins, so `miet-fed tune results/.../config.toml` reruns it
    saved = Path(s["out"], "config.toml").read_text()
    assert "my_edge.py" in saved and "plugins = [" in saved


def test_cost_with_plugin_gather_and_edge_network(plugins):
    args, _ = plugins
    model = ["--model", "vit_tiny_patch16_224", "--img-size", "32"]
    report = _summary(_cli("cost", *args, *model, "--edge", "meanmlp", "--rank", "8", "--json"))
    assert "mean" in {r["gather"] for r in report["rows"]}
    edge = report["edge"]
    assert edge["gather"] == "sum"  # the first gather meanmlp can read, Gather* first
    dim = report["dim"]  # LayerNorm(dim) + Linear(dim, 8) in the body, Linear(8, 10) the head
    assert edge["params"] == {
        "head": 8 * 10 + 10,
        "body": 2 * dim + dim * 8 + 8,
        "total": 90 + 10 * dim + 8,
    }


@pytest.mark.slow  # Ray and Flower
def test_simulate_with_every_kind_of_plugin_in_the_ray_workers_too(plugins, tmp_path):
    args, seen = plugins
    s = _summary(
        _cli(
            "simulate",
            *args,
            *TINY_DATA,
            "--strategy",
            "pull",
            "--set",
            "fed.pull.mu=0.25",
            "--set",
            "edge.rank=8",
            "--set",
            "data.n_train=60",
            "--set",
            "data.n_test=15",
            "--num-clients",
            "3",
            "--rounds",
            "2",
            "--set",
            "fed.partition=iid",
            "--set",
            "train.epochs=1",
            "--set",
            "run.checkpoint=false",
            "--quiet",
            "--json",
        )
    )
    assert s["failures"] == 0 and s["ledger_equals_model"] is True
    lines = seen.read_text().splitlines()
    strategy = {line.split()[1]: line.split()[2] for line in lines if line.startswith("strategy")}
    datasets = {line.split()[1] for line in lines if line.startswith("dataset")}
    # The strategy ran in Ray's client workers, with the parameter set on the command line; the
    # dataset was loaded in more than one process (the driver, the backbone actor).
    assert strategy and set(strategy.values()) == {"0.25"}
    assert len(datasets) >= 2
    config = Path(s["out"], "config.toml").read_text()
    assert "[fed.pull]\nmu = 0.25" in config


def test_registry_battery_runs_over_plugin_entries(plugins):
    """The existing battery picks the plugin's entries up: nothing to write for them."""
    args, _ = plugins
    paths = os.pathsep.join(args[1::2])
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_registries.py"]
        + ["-k", "meanmlp or mean or pull or bright3", "-rA"],
        capture_output=True,
        text=True,
        cwd=repo,
        env={**os.environ, "MIET_FED_PLUGINS": paths},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    for entry in ("[mean]", "[meanmlp]", "[pull]", "[bright3]"):
        assert f"{entry} " in proc.stdout or f"{entry}\n" in proc.stdout, (entry, proc.stdout)


BAD = {
    "syntax error": ("def broken(:\n", "syntax error on line 1"),
    "import error": ("import no_such_module_here\n", "failed to import: ModuleNotFoundError"),
    "taken name": (
        "from miet_fed.cloud.gather import GATHERS, Gather\n"
        "@GATHERS.register('sum')\nclass Sum(Gather):\n    pass\n",
        "gather function 'sum' is already registered (by miet_fed.cloud.gather.sum)",
    ),
    "raises": ("raise RuntimeError('boom')\n", "failed to import: RuntimeError: boom"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_plugin_is_one_line_and_a_non_zero_exit(case, tmp_path):
    text, message = BAD[case]
    plugin = tmp_path / "bad.py"
    plugin.write_text(text)
    for argv in (["tune", *TINY], ["cost", "--model", "vit_tiny_patch16_224"]):
        proc = _cli(*argv, "--plugin", str(plugin))
        err = proc.stderr.strip()
        assert proc.returncode == 2, err
        assert err.startswith("miet-fed: error: plugin ") and "\n" not in err, err
        assert message in err and "Traceback" not in err, err
    assert not Path("results").exists()


def test_a_missing_plugin_file_is_one_line(tmp_path):
    proc = _cli("simulate", "--plugin", str(tmp_path / "nope.py"))
    assert proc.returncode == 2 and "no such file" in proc.stderr
    assert proc.stderr.count("\n") == 1
