"""miet_fed: federated simulation of MIET edge tuning.

The Python API (`simulate`, `tune`, `load_run`, `load_runs`; `with ray_session():` around
several `simulate` calls to share one Ray instance) loads on first use, so
`import miet_fed` stays cheap: torch, Ray, Flower and pandas load only when a function needs them.
"""

import os
from typing import Any

from miet_fed.errors import MietError

__version__ = "0.1.0"

# Nothing leaves the machine unless asked: Flower and Ray send anonymous usage telemetry by
# default. Off in every process that imports miet_fed (Ray workers inherit it); set either
# variable to 1 yourself to opt in.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

#: Public name -> the module that defines it (imported on first access, PEP 562).
_LAZY = {
    "simulate": "miet_fed.api",
    "tune": "miet_fed.api",
    "load_run": "miet_fed.runs",
    "load_runs": "miet_fed.runs",
    "Run": "miet_fed.runs",
    "Runs": "miet_fed.runs",
    "SimulateConfig": "miet_fed.config",
    "TuneConfig": "miet_fed.config",
    "ray_session": "miet_fed.federation.ray_setup",
}

__all__ = ["MietError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'miet_fed' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
