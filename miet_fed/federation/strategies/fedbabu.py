"""`fedbabu`: train and share only the body; the head stays at its shared random init during
federation and is fine-tuned per client before personal evaluation (Oh et al., 2022)."""

from miet_fed.edge.cohort import Cohort
from miet_fed.federation.strategies import STRATEGIES, FedStrategy, Results

TUNED = "fedbabu-tuned"


@STRATEGIES.register("fedbabu")
class FedBABU(FedStrategy):
    name = "fedbabu"
    summary = "head frozen during federation, body shared; head fine-tuned per client at evaluation"
    share = "body"
    global_model = False
    eval_needs_train = True

    def local_update(self, job: Cohort) -> Results:
        return job.fit(part="body")

    def personal_eval(self, job: Cohort) -> Results:
        job.copy("net", TUNED)
        if job.fed.finetune_epochs:
            job.fit(slot=TUNED, part="head", epochs=job.fed.finetune_epochs)
        return job.evaluate(TUNED)
