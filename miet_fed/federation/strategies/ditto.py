"""`ditto`: a FedAvg global model plus a personal model pulled toward it (Li et al., 2021)."""

from dataclasses import dataclass

from miet_fed.config import setting
from miet_fed.edge.cohort import Cohort
from miet_fed.federation.strategies import STRATEGIES, FedStrategy, Results

PERSONAL = "ditto-personal"


@dataclass(frozen=True)
class DittoParams:
    lam: float = setting(0.1, "pull of the personal model toward the global one (lambda)", ge=0)


@STRATEGIES.register("ditto")
class Ditto(FedStrategy):
    name = "ditto"
    summary = "global FedAvg model; personal model regularised toward it (lambda)"
    personal_slots = (PERSONAL,)
    Params = DittoParams

    def local_update(self, job: Cohort) -> Results:
        job.copy("net", PERSONAL, only_missing=True)  # first time: start from the global model
        result = job.fit()
        job.fit(slot=PERSONAL, prox_mu=job.fed.params.lam)
        return result

    def personal_eval(self, job: Cohort) -> Results:
        return job.evaluate(PERSONAL, fallback="net")
