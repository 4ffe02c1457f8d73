"""`fedavgm`: FedAvg with server momentum (Hsu et al., 2019), Flower's FedAvgM."""

from typing import Any

from flwr.serverapp.strategy import FedAvgM

from miet_fed.config import FedConfig
from miet_fed.federation.strategies import STRATEGIES, FedStrategy


@STRATEGIES.register("fedavgm")
class FedAvgMStrategy(FedStrategy):
    name = "fedavgm"
    summary = "average with server momentum"
    flower_cls = FedAvgM
    server_state = ("current_arrays", "momentum_vector")

    def flower_kwargs(self, fed: FedConfig) -> dict[str, Any]:
        return {"server_learning_rate": 1.0, "server_momentum": fed.server_momentum}
