"""`fedavgm`: FedAvg with server momentum (Hsu et al., 2019), Flower's FedAvgM."""

from dataclasses import dataclass
from typing import Any

from flwr.serverapp.strategy import FedAvgM

from miet_fed.config import FedConfig, setting
from miet_fed.federation.strategies import STRATEGIES, FedStrategy


@dataclass(frozen=True)
class FedAvgMParams:
    server_momentum: float = setting(0.9, "server momentum", ge=0)


@STRATEGIES.register("fedavgm")
class FedAvgMStrategy(FedStrategy):
    name = "fedavgm"
    summary = "average with server momentum"
    flower_cls = FedAvgM
    server_state = ("current_arrays", "momentum_vector")
    Params = FedAvgMParams

    def flower_kwargs(self, fed: FedConfig) -> dict[str, Any]:
        return {"server_learning_rate": 1.0, "server_momentum": fed.params.server_momentum}
