"""`lg-fedavg`: local representation (body), shared global head (Liang et al., 2020)."""

from miet_fed.federation.strategies import STRATEGIES, FedStrategy


@STRATEGIES.register("lg-fedavg")
class LGFedAvg(FedStrategy):
    name = "lg-fedavg"
    summary = "keep a personal body, average the head"
    share = "head"
    global_model = False
