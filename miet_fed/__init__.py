"""miet_fed: federated simulation of MIET edge tuning."""

import os

__version__ = "0.1.0"

# Nothing leaves the machine unless asked: Flower and Ray send anonymous usage telemetry by
# default. Off in every process that imports miet_fed (Ray workers inherit it); set either
# variable to 1 yourself to opt in.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
