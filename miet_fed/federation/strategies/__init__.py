"""Aggregation strategies, registered by name, one file each.

A strategy is two small decisions: which part of the edge network is shared (`share`, applied by
`miet_fed.federation.sharing`) and how a client updates locally (`local_update`); the server side
is a Flower strategy (FedAvg unless the file says otherwise). Personalized strategies keep the
unshared part in the client's persistent state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from flwr.serverapp.strategy import FedAvg

from miet_fed.config import FedConfig
from miet_fed.edge.networks import EdgeNetwork
from miet_fed.edge.train import Optim, evaluate, fit
from miet_fed.registry import Registry


@dataclass
class LocalJob:
    """One client's round: its network (shared part already loaded), data and settings."""

    net: EdgeNetwork
    x_train: dict[str, torch.Tensor]
    y_train: torch.Tensor
    x_test: dict[str, torch.Tensor]
    y_test: torch.Tensor
    received: dict[str, torch.Tensor]  # the global (shared) state this round started from
    optim: Optim
    generator: torch.Generator
    fed: FedConfig
    extra: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # persisted states


class FedStrategy:
    name: ClassVar[str]
    summary: ClassVar[str] = ""
    share: ClassVar[str] = "all"
    #: a full global model exists, so the server can evaluate it on the global test set
    global_model: ClassVar[bool] = True
    flower_cls: ClassVar[type] = FedAvg
    #: personal evaluation trains first (FedBABU's head fine-tuning), so it needs the train payloads
    eval_needs_train: ClassVar[bool] = False

    def flower_kwargs(self, fed: FedConfig) -> dict[str, Any]:
        return {}

    def local_update(self, job: LocalJob) -> tuple[float, float]:
        return fit(job.net, job.x_train, job.y_train, job.optim, job.generator)

    def personal_eval(self, job: LocalJob) -> tuple[float, float]:
        """Accuracy of the model this client would deploy, on its own test split."""
        return evaluate(job.net, job.x_test, job.y_test)


STRATEGIES: Registry[type[FedStrategy]] = Registry("strategy", __name__)


def get_strategy(name: str) -> FedStrategy:
    return STRATEGIES.get(name)()
