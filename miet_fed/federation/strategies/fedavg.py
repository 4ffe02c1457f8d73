"""`fedavg`: average the whole edge network (McMahan et al., 2017)."""

from miet_fed.federation.strategies import STRATEGIES, FedStrategy


@STRATEGIES.register("fedavg")
class FedAvgStrategy(FedStrategy):
    name = "fedavg"
    summary = "average the whole edge network"
