"""`fedprox`: FedAvg whose clients add mu/2 ||w - w_global||^2 (Li et al., 2020)."""

from dataclasses import dataclass
from typing import Any

from flwr.serverapp.strategy import FedProx

from miet_fed.config import FedConfig, setting
from miet_fed.edge.cohort import Cohort
from miet_fed.federation.strategies import STRATEGIES, FedStrategy, Results


@dataclass(frozen=True)
class FedProxParams:
    mu: float = setting(0.01, "proximal term weight: loss + mu/2 ||w - w_global||^2", ge=0)


@STRATEGIES.register("fedprox")
class FedProxStrategy(FedStrategy):
    name = "fedprox"
    summary = "average; clients keep close to the global model (proximal term)"
    flower_cls = FedProx
    Params = FedProxParams

    def flower_kwargs(self, fed: FedConfig) -> dict[str, Any]:
        return {"proximal_mu": fed.params.mu}

    def local_update(self, job: Cohort) -> Results:
        return job.fit(prox_mu=job.fed.params.mu)
