"""Config fields: each carries its default, its help text and the rule of its valid values, so
the check, `miet-fed config`, the README reference and the tests read one source.

    lr: float = setting(1e-3, "AdamW learning rate", gt=0)
    gather: str = setting("sum", "gather function", names="miet_fed.cloud.gather:GATHERS")

A section (`Section`) checks every field against its rule when it is built: ranges (`ge`, `gt`,
`lt`), fixed choices, registered names (a `Registry` or a collection, imported lazily: some
import torch), or a check function; `check()` adds rules across fields. A strategy's own
parameter dataclass uses the same `setting(...)`.
"""

from __future__ import annotations

import importlib
import typing
from dataclasses import MISSING, Field, field, fields
from typing import Any

from miet_fed.errors import MietError


def setting(
    default: Any,
    help: str,  # noqa: A002 - the field's help text
    *,
    ge: float | None = None,
    gt: float | None = None,
    lt: float | None = None,
    choices: tuple[str, ...] | None = None,
    names: str | None = None,
    check: str | None = None,
    allowed: str | None = None,
    also: tuple[str, ...] = (),
    runtime: bool = False,
    legacy: Any = MISSING,
    added: bool = False,
) -> Any:
    """A config field. `names`/`check` are "module:attr" (a Registry or collection of valid
    names; a function raising a MietError), looked up only when a non-default value needs it.
    `allowed` overrides the rule's text, `also` adds forms to the names (npz:PATH); `runtime`
    marks a setting that does not change what a run computes (left out of its identity and of
    a checkpoint's signature). `legacy` is the value a run folder saved before the key existed
    ran with, when that is not the default (`with_legacy`). `added` marks a key added after runs
    were saved whose default computes what those runs computed: at its default it is left out of
    the identity, so their folders and checkpoints stay theirs (`strip_runtime`)."""
    meta = {"help": help, "ge": ge, "gt": gt, "lt": lt, "choices": choices, "names": names}
    meta |= {"check": check, "allowed": allowed, "also": also, "runtime": runtime}
    if legacy is not MISSING:
        meta["legacy"] = legacy
    if added:
        meta["added"] = True
    return field(default=default, metadata=meta)


def _attr(ref: str) -> Any:
    module, attr = ref.split(":")
    return getattr(importlib.import_module(module), attr)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def rule_text(f: Field[Any], typ: Any) -> str:
    """The valid values of a field, as `miet-fed config` and the README show them."""
    m = f.metadata
    if m.get("allowed"):
        return m["allowed"]
    if m.get("names"):
        table = _attr(m["names"])
        valid = table.names() if hasattr(table, "names") else list(table)
        return ", ".join([*valid, *m.get("also", ())])
    if m.get("choices"):
        return ", ".join(m["choices"])
    lower = f">= {_num(m['ge'])}" if m.get("ge") is not None else None
    if m.get("gt") is not None:
        lower = f"> {_num(m['gt'])}"
    upper = f"< {_num(m['lt'])}" if m.get("lt") is not None else None
    if lower or upper:
        return " and ".join(p for p in (lower, upper) if p)
    return type_text(typ)


def type_text(typ: Any) -> str:
    if typing.get_origin(typ) is tuple:
        return "a list of paths"
    return {bool: "true, false", int: "an integer", float: "a number"}.get(typ, "text")


def check_value(where: str, value: Any, f: Field[Any]) -> None:
    """`value` against the field's rule; a MietError saying what is valid."""
    m = f.metadata
    rule = rule_text(f, None) if any(m.get(k) is not None for k in ("ge", "gt", "lt")) else ""
    if m.get("ge") is not None and not value >= m["ge"]:
        raise MietError(f"{where} must be {rule}, got {value!r}")
    if m.get("gt") is not None and not value > m["gt"]:
        raise MietError(f"{where} must be {rule}, got {value!r}")
    if m.get("lt") is not None and not value < m["lt"]:
        raise MietError(f"{where} must be {rule}, got {value!r}")
    if m.get("choices") and value not in m["choices"]:
        raise MietError(f"unknown {where} '{value}'; valid: {', '.join(m['choices'])}")
    if value == f.default:
        return  # a default name is a built-in one: no registry (nor torch) is loaded for it
    if m.get("check"):
        _attr(m["check"])(value)
    elif m.get("names"):
        table = _attr(m["names"])
        if hasattr(table, "get"):
            table.get(value)  # a Registry: its own message lists the registered names
        elif value not in table:
            raise MietError(f"unknown {where} '{value}'; valid: {', '.join(table)}")


class Section:
    """Base of the config sections (frozen dataclasses of `setting` fields): building one checks
    every field against its rule, then the section's own rules across fields (`check`)."""

    section: typing.ClassVar[str] = ""

    def __post_init__(self) -> None:
        validate(self, self.section)
        self.check()

    def check(self) -> None:
        """Rules across fields (e.g. rank divisible by heads); raise a MietError."""


def validate(obj: Any, prefix: str) -> None:
    for f in fields(obj):
        if f.metadata.get("table"):
            continue
        check_value(f"{prefix}.{f.name}", getattr(obj, f.name), f)


def require(cond: bool, message: str) -> None:
    if not cond:
        raise MietError(message)


def default_of(f: Field[Any]) -> Any:
    if f.default is not MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


# ---------------------------------------------------------------- typing values


class CliValue(str):
    """A value typed on the command line: parsed by the field's type, not by TOML."""


def coerce(where: str, value: Any, typ: Any, from_cli: bool) -> Any:
    """The value as `typ`; floats must be finite (nan and inf pass every `> 0` check and then
    poison a run: a learning rate of inf trains to NaN)."""
    if typing.get_origin(typ) is tuple:
        return _paths(where, value, from_cli)
    result = _coerce_type(where, value, typ, from_cli)
    if isinstance(result, float) and not abs(result) < float("inf"):  # nan, inf, -inf
        raise MietError(f"{where} must be a finite number, got {value!r}")
    return result


def _paths(where: str, value: Any, from_cli: bool) -> tuple[str, ...]:
    """A list of paths: a TOML array of strings, or comma-separated on the command line."""
    if from_cli and isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise MietError(f"{where} must be a list of paths, got {value!r}")
    return tuple(value)


def _coerce_type(where: str, value: Any, typ: type, from_cli: bool) -> Any:
    if from_cli and isinstance(value, str):
        if typ is bool:
            low = value.lower()
            if low not in ("true", "false", "1", "0", "yes", "no"):
                raise MietError(f"{where} must be true or false, got '{value}'")
            return low in ("true", "1", "yes")
        if typ is int:
            try:
                return int(value)
            except ValueError:
                raise MietError(f"{where} must be an integer, got '{value}'") from None
        if typ is float:
            try:
                return float(value)
            except ValueError:
                raise MietError(f"{where} must be a number, got '{value}'") from None
        return value
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is int and isinstance(value, bool) or not isinstance(value, typ):
        raise MietError(f"{where} must be {typ.__name__}, got {type(value).__name__} {value!r}")
    return value
