"""`fedper`: share the attention body, keep the head personal (Arivazhagan et al., 2019)."""

from miet_fed.federation.strategies import STRATEGIES, FedStrategy


@STRATEGIES.register("fedper")
class FedPer(FedStrategy):
    name = "fedper"
    summary = "average the body, keep a personal head"
    share = "body"
    global_model = False
