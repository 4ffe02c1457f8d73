"""`fedbabu`: train and share only the body; the head stays at its shared random init during
federation and is fine-tuned per client before personal evaluation (Oh et al., 2022)."""

import copy
from dataclasses import replace

from miet_fed.edge.train import evaluate, fit
from miet_fed.federation.strategies import STRATEGIES, FedStrategy, LocalJob


@STRATEGIES.register("fedbabu")
class FedBABU(FedStrategy):
    name = "fedbabu"
    summary = "head frozen during federation, body shared; head fine-tuned per client at evaluation"
    share = "body"
    global_model = False
    eval_needs_train = True

    def local_update(self, job: LocalJob) -> tuple[float, float]:
        return fit(
            job.net,
            job.x_train,
            job.y_train,
            job.optim,
            job.generator,
            params=job.net.body_parameters(),
        )

    def personal_eval(self, job: LocalJob) -> tuple[float, float]:
        tuned = copy.deepcopy(job.net)
        if job.fed.finetune_epochs:
            optim = replace(job.optim, epochs=job.fed.finetune_epochs)
            fit(
                tuned,
                job.x_train,
                job.y_train,
                optim,
                job.generator,
                params=tuned.head_parameters(),
            )
        return evaluate(tuned, job.x_test, job.y_test)
