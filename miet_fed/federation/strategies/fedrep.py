"""`fedrep`: train the personal head first, then the shared body (Collins et al., 2021)."""

from dataclasses import dataclass

from miet_fed.config import setting
from miet_fed.edge.cohort import Cohort
from miet_fed.federation.strategies import STRATEGIES, FedStrategy, Results


@dataclass(frozen=True)
class FedRepParams:
    head_epochs: int = setting(
        1, "head epochs (body frozen) before the body epochs each round", ge=0
    )


@STRATEGIES.register("fedrep")
class FedRep(FedStrategy):
    name = "fedrep"
    summary = "head epochs with the body frozen, then body epochs; share the body"
    share = "body"
    global_model = False
    Params = FedRepParams

    def local_update(self, job: Cohort) -> Results:
        epochs = job.fed.params.head_epochs
        if epochs:
            job.fit(part="head", epochs=epochs)
        return job.fit(part="body")
