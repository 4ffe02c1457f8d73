"""`fedadam`: adaptive server optimiser (Reddi et al., 2021), Flower's FedAdam."""

from dataclasses import dataclass
from typing import Any

from flwr.serverapp.strategy import FedAdam

from miet_fed.config import FedConfig, setting
from miet_fed.federation.strategies import STRATEGIES, FedStrategy


@dataclass(frozen=True)
class FedAdamParams:
    server_lr: float = setting(0.01, "server learning rate (Flower's eta)", ge=0)


@STRATEGIES.register("fedadam")
class FedAdamStrategy(FedStrategy):
    name = "fedadam"
    summary = "Adam on the server over averaged updates"
    flower_cls = FedAdam
    server_state = ("current_arrays", "m_t", "v_t")
    Params = FedAdamParams

    def flower_kwargs(self, fed: FedConfig) -> dict[str, Any]:
        return {"eta": fed.params.server_lr, "eta_l": 1e-3, "tau": 1e-3}
