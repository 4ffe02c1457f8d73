"""The Python API: run `tune` and `simulate` from a notebook, and load what they wrote as pandas
frames (`load_run`, `load_runs`: see `miet_fed.runs`).

    run = miet_fed.simulate("configs/simulate.toml", {"fed.strategy": "fedavg"}, out="results/a")
    runs = miet_fed.load_runs("results/sweep_clients")
    runs.comm_cost()                       # bytes by direction and kind, one row per run

Bad input raises MietError (the CLI's one-line message); nothing exits. torch, Ray and Flower load
only when a run starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import is_dataclass
from pathlib import Path
from typing import Any

from miet_fed.errors import MietError
from miet_fed.jobs import job
from miet_fed.runs import Run, Runs, load_run, load_runs

__all__ = ["Run", "Runs", "build", "load_run", "load_runs", "simulate", "tune"]


def _overrides(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """{"fed.rounds": 3, "fed.fedprox.mu": "0.1"} -> nested; strings are typed by the field,
    as --set types them."""
    from miet_fed.config import CliValue, nest

    flat = {}
    for dotted, value in (overrides or {}).items():
        if not isinstance(dotted, str) or "." not in dotted or not all(dotted.split(".")):
            raise MietError(
                f"override key {dotted!r} is not 'section.key' (e.g. 'fed.rounds'): "
                "overrides maps config keys to values, as --set does"
            )
        flat[dotted] = CliValue(value) if isinstance(value, str) else value
    return nest(flat, "overrides")


def build(
    command: str,
    config: Any = None,
    overrides: Mapping[str, Any] | None = None,
    out: str | os.PathLike[str] | None = None,
) -> Any:
    """The validated config of `command` from a TOML path, a nested dict or a config object,
    with `overrides` and `out` on top (what the CLI builds from a file, --set and --out)."""
    from miet_fed.config import build_config, load_config, merge, to_dict

    cls = job(command).config_class
    _check_mapping(overrides)
    extra = _overrides(overrides)
    if out is not None:
        extra.setdefault("run", {})["out"] = str(out)
    if config is None or isinstance(config, (str, os.PathLike)):
        return load_config(cls, Path(config) if config is not None else None, extra)
    if is_dataclass(config) and not isinstance(config, type):
        if not isinstance(config, cls):
            raise MietError(
                f"{command} needs a {cls.__name__}, got a {type(config).__name__}; "
                f"build one with miet_fed.{cls.__name__}() or pass a TOML path"
            )
        data: dict[str, Any] = to_dict(config)
    elif isinstance(config, Mapping):
        data = {s: dict(v) if isinstance(v, Mapping) else v for s, v in config.items()}
    else:
        raise MietError(
            f"config must be a TOML path, a dict of sections or a {cls.__name__}, "
            f"got {type(config).__name__}"
        )
    return build_config(cls, merge(data, extra), "config")


def _check_mapping(overrides: Any) -> None:
    if overrides is not None and not isinstance(overrides, Mapping):
        raise MietError(
            f"overrides must map 'section.key' to a value, e.g. {{'fed.rounds': 3}}; got a "
            f"{type(overrides).__name__}"
        )


def _quiet(overrides: Mapping[str, Any] | None, quiet: bool) -> dict[str, Any]:
    _check_mapping(overrides)
    return {**(overrides or {}), **({"run.progress": False} if quiet else {})}


def tune(
    config: Any = None,
    overrides: Mapping[str, Any] | None = None,
    out: str | os.PathLike[str] | None = None,
    *,
    quiet: bool = False,
) -> Run:
    """Edge tuning on one device (`miet-fed tune`); returns the finished run."""
    return Run(job("tune").runner(build("tune", config, _quiet(overrides, quiet), out))["out"])


def simulate(
    config: Any = None,
    overrides: Mapping[str, Any] | None = None,
    out: str | os.PathLike[str] | None = None,
    *,
    quiet: bool = False,
) -> Run:
    """Federated edge tuning on Flower + Ray (`miet-fed simulate`); returns the finished run.
    A run whose clients failed raises MietError unless `fed.allow_failures` is true."""
    cfg = build("simulate", config, _quiet(overrides, quiet), out)
    return Run(job("simulate").runner(cfg)["out"])
