"""`local`: nothing shared, each device tunes alone (the paper's own setting, many times over)."""

from miet_fed.federation.strategies import STRATEGIES, FedStrategy


@STRATEGIES.register("local")
class Local(FedStrategy):
    name = "local"
    summary = "no sharing: every client trains its own edge network"
    share = "none"
    global_model = False
