"""`fedadam`: adaptive server optimiser (Reddi et al., 2021), Flower's FedAdam."""

from typing import Any

from flwr.serverapp.strategy import FedAdam

from miet_fed.config import FedConfig
from miet_fed.federation.strategies import STRATEGIES, FedStrategy


@STRATEGIES.register("fedadam")
class FedAdamStrategy(FedStrategy):
    name = "fedadam"
    summary = "Adam on the server over averaged updates"
    flower_cls = FedAdam
    server_state = ("current_arrays", "m_t", "v_t")

    def flower_kwargs(self, fed: FedConfig) -> dict[str, Any]:
        return {"eta": fed.server_lr, "eta_l": 1e-3, "tau": 1e-3}
