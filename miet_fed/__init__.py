"""miet_fed: federated simulation of MIET edge tuning."""

__version__ = "0.1.0"
