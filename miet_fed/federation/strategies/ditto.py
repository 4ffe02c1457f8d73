"""`ditto`: a FedAvg global model plus a personal model pulled toward it (Li et al., 2021)."""

import copy

from miet_fed.edge.train import evaluate, fit
from miet_fed.federation.strategies import STRATEGIES, FedStrategy, LocalJob

PERSONAL = "ditto-personal"


@STRATEGIES.register("ditto")
class Ditto(FedStrategy):
    name = "ditto"
    summary = "global FedAvg model; personal model regularised toward it (lambda)"

    def local_update(self, job: LocalJob) -> tuple[float, float]:
        personal = copy.deepcopy(job.net)  # starts from the received global the first time
        if PERSONAL in job.extra:
            personal.load_state_dict(job.extra[PERSONAL])
        result = fit(job.net, job.x_train, job.y_train, job.optim, job.generator)
        fit(
            personal,
            job.x_train,
            job.y_train,
            job.optim,
            job.generator,
            prox=(job.received, job.fed.ditto_lambda),
        )
        job.extra[PERSONAL] = personal.state_dict()
        return result

    def personal_eval(self, job: LocalJob) -> tuple[float, float]:
        if PERSONAL not in job.extra:
            return evaluate(job.net, job.x_test, job.y_test)
        personal = copy.deepcopy(job.net)
        personal.load_state_dict(job.extra[PERSONAL])
        return evaluate(personal, job.x_test, job.y_test)
