"""Configuration: frozen dataclasses hold the defaults; `configs/*.toml` are small overlays on
them; `--set section.key=value` goes on top.

- `fields`: `setting(default, help, rule...)`, the one place a key's default, help and valid
  values are written; building a section checks every rule once (`Section`).
- `data`: the `[data]` section, one dataset or `[[data.tasks]]` (several tasks, one backbone).
- `sections`: the other sections of `tune` and `simulate` (a strategy's own parameters are its own
  dataclass, declared in its file, under `[fed.<strategy>]`).
- `load`: TOML and overrides in (`build_config`, which loads `run.plugins` before any name is
  checked), plain data and TOML out.
- `reference`: every key as documented (`describe`), and the runtime-only settings.
"""

from __future__ import annotations

from dataclasses import replace

from miet_fed.config.data import DataConfig, TaskConfig, TuneDataConfig
from miet_fed.config.fields import CliValue, Section, setting
from miet_fed.config.load import (
    Extend,
    build_config,
    check_contained,
    flatten,
    load_config,
    merge,
    nest,
    parse_overrides,
    read_toml,
    to_dict,
    to_toml,
    toml_text,
    toml_value,
)
from miet_fed.config.reference import Key, describe, runtime_keys, strip_runtime, with_legacy
from miet_fed.config.sections import (
    EdgeConfig,
    FedConfig,
    LinkConfig,
    ModelConfig,
    PlanConfig,
    RunConfig,
    SimulateConfig,
    TrainConfig,
    TuneConfig,
    TuneTrainConfig,
)

_CliValue = CliValue  # the name miet_fed.api used

__all__ = [
    "CliValue",
    "DataConfig",
    "EdgeConfig",
    "Extend",
    "FedConfig",
    "Key",
    "LinkConfig",
    "ModelConfig",
    "PlanConfig",
    "RunConfig",
    "Section",
    "SimulateConfig",
    "TaskConfig",
    "TrainConfig",
    "TuneConfig",
    "TuneDataConfig",
    "TuneTrainConfig",
    "build_config",
    "check_contained",
    "describe",
    "flatten",
    "load_config",
    "merge",
    "nest",
    "parse_overrides",
    "read_toml",
    "replace",
    "runtime_keys",
    "setting",
    "strip_runtime",
    "to_dict",
    "to_toml",
    "toml_text",
    "toml_value",
    "with_legacy",
]
