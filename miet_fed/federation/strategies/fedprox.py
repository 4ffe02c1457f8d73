"""`fedprox`: FedAvg whose clients add mu/2 ||w - w_global||^2 (Li et al., 2020)."""

from typing import Any

from flwr.serverapp.strategy import FedProx

from miet_fed.config import FedConfig
from miet_fed.edge.train import fit
from miet_fed.federation.strategies import STRATEGIES, FedStrategy, LocalJob


@STRATEGIES.register("fedprox")
class FedProxStrategy(FedStrategy):
    name = "fedprox"
    summary = "average; clients keep close to the global model (proximal term)"
    flower_cls = FedProx

    def flower_kwargs(self, fed: FedConfig) -> dict[str, Any]:
        return {"proximal_mu": fed.proximal_mu}

    def local_update(self, job: LocalJob) -> tuple[float, float]:
        prox = (job.received, job.fed.proximal_mu)
        return fit(job.net, job.x_train, job.y_train, job.optim, job.generator, prox=prox)
