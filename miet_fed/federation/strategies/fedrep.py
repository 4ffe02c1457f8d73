"""`fedrep`: train the personal head first, then the shared body (Collins et al., 2021)."""

from miet_fed.edge.cohort import Cohort
from miet_fed.federation.strategies import STRATEGIES, FedStrategy, Results


@STRATEGIES.register("fedrep")
class FedRep(FedStrategy):
    name = "fedrep"
    summary = "head epochs with the body frozen, then body epochs; share the body"
    share = "body"
    global_model = False

    def local_update(self, job: Cohort) -> Results:
        if job.fed.head_epochs:
            job.fit(part="head", epochs=job.fed.head_epochs)
        return job.fit(part="body")
