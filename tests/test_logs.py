"""Flower's noise is hidden, its other warnings are not."""

from __future__ import annotations

import logging

from miet_fed.federation.logs import quiet_flower


def test_only_the_listed_flower_lines_are_hidden(caplog):
    quiet_flower()
    quiet_flower()  # idempotent
    logger = logging.getLogger("flwr")
    assert sum(type(f).__name__ == "_QuietFlower" for f in logger.filters) == 1
    with caplog.at_level(logging.WARNING, logger="flwr"):
        logger.warning("DEPRECATED FEATURE: %s", "The `run_simulation` function is deprecated x")
        logger.warning("Manually terminating ClientAppActor")
        logger.warning("ActorPool is empty")
    assert [r.getMessage() for r in caplog.records] == ["ActorPool is empty"]
