"""Every key of a command's config as documented (`miet-fed config`, the README's reference),
and the settings that do not change what a run computes; all read from the fields themselves."""

from __future__ import annotations

import typing
from dataclasses import fields
from typing import Any

from miet_fed.config.fields import default_of, rule_text, type_text
from miet_fed.config.load import sections_of
from miet_fed.config.sections import has_params


class Key(typing.NamedTuple):
    """One config key as documented: dotted name, default, type, valid values, help."""

    key: str
    default: Any
    type: str
    allowed: str
    help: str


def _rows(prefix: str, sec_cls: type, defaults: Any) -> list[Key]:
    hints = typing.get_type_hints(sec_cls)
    rows = []
    for f in fields(sec_cls):
        if f.metadata.get("table"):
            continue
        typ = hints[f.name]
        default = getattr(defaults, f.name)
        rows.append(
            Key(
                f"{prefix}.{f.name}",
                list(default) if isinstance(default, tuple) else default,
                type_text(typ) if typing.get_origin(typ) else typ.__name__,
                rule_text(f, typ),
                f.metadata.get("help", ""),
            )
        )
    return rows


def strategy_rows() -> list[Key]:
    """`fed.<strategy>.<key>` for every registered strategy with parameters (plugins too)."""
    from miet_fed.federation.strategies import STRATEGIES

    rows = []
    for name, strategy in STRATEGIES.items():
        if has_params(strategy.Params):
            rows += _rows(f"fed.{name}", strategy.Params, strategy.Params())
    return rows


def describe(cls: type) -> list[Key]:
    """Every key of a command's config, with its default, valid values and help: the source of
    `miet-fed config` and of the README's config reference."""
    rows = []
    defaults = cls()
    for name, sec_cls in sections_of(cls).items():
        rows += _rows(name, sec_cls, getattr(defaults, name))
        if any(f.metadata.get("table") for f in fields(sec_cls)):
            rows += strategy_rows()
    return rows


def runtime_keys(cls: type) -> dict[str, set[str]]:
    """Per section, the settings marked `runtime`: a rerun or a resume may differ in these."""
    out: dict[str, set[str]] = {}
    for name, sec_cls in sections_of(cls).items():
        keys = {f.name for f in fields(sec_cls) if f.metadata.get("runtime")}
        if keys:
            out[name] = keys
    return out


def with_legacy(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """A run folder's saved config (nested, as read from its TOML) with every key it predates
    set to the value it ran with (`setting(legacy=...)`), not to today's default: a tune run saved
    before validation existed had none (data.n_val = 0), so it never passes for one that has."""
    out = dict(data)
    for name, sec_cls in sections_of(cls).items():
        table = out.get(name)
        if table is not None and not isinstance(table, dict):
            continue
        missing = {
            f.name: f.metadata["legacy"]
            for f in fields(sec_cls)
            if "legacy" in f.metadata and f.name not in (table or {})
        }
        if missing:
            out[name] = {**(table or {}), **missing}
    return out


def strip_runtime(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """`to_dict(cfg)` without its runtime settings, nor the keys marked `added` while at their
    default: what a run's identity is made of."""
    drop = runtime_keys(cls)
    for name, sec_cls in sections_of(cls).items():
        table = data.get(name)
        for f in fields(sec_cls):
            added = f.metadata.get("added") and isinstance(table, dict) and f.name in table
            default = list(f.default) if isinstance(f.default, tuple) else f.default
            if added and table[f.name] == default:
                drop.setdefault(name, set()).add(f.name)
    out = {
        s: {k: v for k, v in t.items() if k not in drop.get(s, ())} if isinstance(t, dict) else t
        for s, t in data.items()
    }
    # a section added whole (every key `added`), at its defaults: as if it did not exist
    sections = sections_of(cls)
    return {
        s: t
        for s, t in out.items()
        if not (
            t == {} and s in sections and all(f.metadata.get("added") for f in fields(sections[s]))
        )
    }


__all__ = [
    "Key",
    "default_of",
    "describe",
    "runtime_keys",
    "strategy_rows",
    "strip_runtime",
    "with_legacy",
]
