"""`fedbabu`: train and share only the body; the head stays at its shared random init during
federation and is fine-tuned per client before personal evaluation (Oh et al., 2022)."""

from dataclasses import dataclass

from miet_fed.config import setting
from miet_fed.edge.cohort import Cohort
from miet_fed.federation.strategies import STRATEGIES, FedStrategy, Results

TUNED = "fedbabu-tuned"


@dataclass(frozen=True)
class FedBABUParams:
    finetune_epochs: int = setting(2, "head fine-tuning epochs before personal evaluation", ge=0)


@STRATEGIES.register("fedbabu")
class FedBABU(FedStrategy):
    name = "fedbabu"
    summary = "head frozen during federation, body shared; head fine-tuned per client at evaluation"
    share = "body"
    global_model = False
    eval_needs_train = True
    Params = FedBABUParams

    def local_update(self, job: Cohort) -> Results:
        return job.fit(part="body")

    def personal_eval(self, job: Cohort) -> Results:
        job.copy("net", TUNED)
        epochs = job.fed.params.finetune_epochs
        if epochs:
            job.fit(slot=TUNED, part="head", epochs=epochs)
        return job.evaluate(TUNED)
