"""`fedprox`: FedAvg whose clients add mu/2 ||w - w_global||^2 (Li et al., 2020)."""

from typing import Any

from flwr.serverapp.strategy import FedProx

from miet_fed.config import FedConfig
from miet_fed.edge.cohort import Cohort
from miet_fed.federation.strategies import STRATEGIES, FedStrategy, Results


@STRATEGIES.register("fedprox")
class FedProxStrategy(FedStrategy):
    name = "fedprox"
    summary = "average; clients keep close to the global model (proximal term)"
    flower_cls = FedProx

    def flower_kwargs(self, fed: FedConfig) -> dict[str, Any]:
        return {"proximal_mu": fed.proximal_mu}

    def local_update(self, job: Cohort) -> Results:
        return job.fit(prox_mu=job.fed.proximal_mu)
