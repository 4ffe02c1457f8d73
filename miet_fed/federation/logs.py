"""Flower log lines that say nothing a miet-fed user can act on, hidden in every process."""

from __future__ import annotations

import logging

#: Substrings of Flower messages dropped from the "flwr" logger.
HIDDEN = (
    # Flower 1.42 marks `run_simulation` deprecated in favour of `flwr run`, which this project
    # also supports (README); the in-process engine is what runs a simulation from one command.
    "`run_simulation` function is deprecated",
    # Every client worker says so when the simulation ends normally.
    "Manually terminating ClientAppActor",
)


class _QuietFlower(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in HIDDEN)


def quiet_flower() -> None:
    """Idempotent: install the filter on Flower's logger of this process."""
    logger = logging.getLogger("flwr")
    if not any(isinstance(f, _QuietFlower) for f in logger.filters):
        logger.addFilter(_QuietFlower())
