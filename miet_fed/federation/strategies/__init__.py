"""Aggregation strategies, registered by name, one file each.

A strategy is two small decisions: which part of the edge network is shared (`share`, applied by
`miet_fed.federation.sharing`) and how devices update locally (`local_update`, written against
`miet_fed.edge.cohort.Cohort`, so it means the same for one device or a cohort of thousands);
the server side is a Flower strategy (FedAvg unless the file says otherwise), fed one weighted
mean per cohort node, which averages exactly as if every device were its own node.
Personalized strategies keep the unshared part, and any `personal_slots`, in the device store.
A strategy with knobs declares them as its own frozen dataclass (`Params`, fields made with
`miet_fed.config.setting`): they become its config table `[fed.<name>]`, checked like every
other key, and reach the strategy as `fed.params` (`job.fed.params` on a node).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from flwr.serverapp.strategy import FedAvg

from miet_fed.config import FedConfig
from miet_fed.edge.cohort import Cohort
from miet_fed.registry import Registry

Results = list[tuple[float, float]]  # (loss, accuracy) per device of the cohort


@dataclass(frozen=True)
class NoParams:
    """The parameters of a strategy that has none."""


class FedStrategy:
    name: ClassVar[str]
    summary: ClassVar[str] = ""
    share: ClassVar[str] = "all"
    #: a full global model exists, so the server can evaluate it on the global test set
    global_model: ClassVar[bool] = True
    flower_cls: ClassVar[type] = FedAvg
    #: personal evaluation trains first (FedBABU's head fine-tuning), so it needs the train payloads
    eval_needs_train: ClassVar[bool] = False
    #: cohort slots kept per device from round to round besides the network (Ditto's model)
    personal_slots: ClassVar[tuple[str, ...]] = ()
    #: attributes of the Flower strategy that carry state between rounds (FedAdam's moments):
    #: checkpointed, and a checkpoint fails loudly if Flower renamed one
    server_state: ClassVar[tuple[str, ...]] = ()
    #: its own parameters: a frozen dataclass of `setting` fields, config table [fed.<name>]
    Params: ClassVar[type] = NoParams

    def flower_kwargs(self, fed: FedConfig) -> dict[str, Any]:
        return {}

    def local_update(self, job: Cohort) -> Results:
        return job.fit()

    def personal_eval(self, job: Cohort) -> Results:
        """Accuracy of the model each device would deploy, on its own test split."""
        return job.evaluate()


STRATEGIES: Registry[type[FedStrategy]] = Registry("strategy", __name__)


def get_strategy(name: str) -> FedStrategy:
    return STRATEGIES.get(name)()
