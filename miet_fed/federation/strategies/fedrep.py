"""`fedrep`: train the personal head first, then the shared body (Collins et al., 2021)."""

from dataclasses import replace

from miet_fed.edge.train import fit
from miet_fed.federation.strategies import STRATEGIES, FedStrategy, LocalJob


@STRATEGIES.register("fedrep")
class FedRep(FedStrategy):
    name = "fedrep"
    summary = "head epochs with the body frozen, then body epochs; share the body"
    share = "body"
    global_model = False

    def local_update(self, job: LocalJob) -> tuple[float, float]:
        head, body = job.net.head_parameters(), job.net.body_parameters()
        if job.fed.head_epochs:
            head_optim = replace(job.optim, epochs=job.fed.head_epochs)
            fit(job.net, job.x_train, job.y_train, head_optim, job.generator, params=head)
        return fit(job.net, job.x_train, job.y_train, job.optim, job.generator, params=body)
