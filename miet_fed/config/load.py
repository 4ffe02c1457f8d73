"""TOML and `--set` overrides into frozen configs, and back (`to_dict`, `to_toml`).

Keys are `section.key`; a strategy's own parameters are one level deeper, `fed.<strategy>.key`
(TOML `[fed.fedprox]`). `build_config` is the one entry: it loads the config's plugins
(`run.plugins`) first, so the names they register are valid, then types every value by its
field and builds the sections, which check every rule once (`miet_fed.config.fields`).
"""

from __future__ import annotations

import json
import tomllib
import typing
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from miet_fed.config.fields import CliValue, coerce, validate
from miet_fed.config.sections import has_params, strategy_params_class
from miet_fed.errors import MietError

C = TypeVar("C")

#: Strategy knobs that lived in [fed] before each strategy had its own table: configs and run
#: folders written then still load.
LEGACY_FED = {
    "proximal_mu": ("fedprox", "mu"),
    "ditto_lambda": ("ditto", "lam"),
    "head_epochs": ("fedrep", "head_epochs"),
    "finetune_epochs": ("fedbabu", "finetune_epochs"),
    "server_lr": ("fedadam", "server_lr"),
    "server_momentum": ("fedavgm", "server_momentum"),
}


class Extend(list):
    """An override that adds to a list key instead of replacing it (`--plugin`)."""


def sections_of(cls: type) -> dict[str, type]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def nest(flat: dict[str, Any], where: str = "overrides") -> dict[str, Any]:
    """{"fed.rounds": 3, "fed.fedprox.mu": 0.1} -> {"fed": {"rounds": 3, "fedprox": {...}}}."""
    out: dict[str, Any] = {}
    for dotted, value in flat.items():
        parts = dotted.strip().split(".") if isinstance(dotted, str) else []
        if len(parts) < 2 or not all(parts):
            raise MietError(f"{where}: '{dotted}' is not section.key (e.g. fed.rounds=3)")
        table = out
        for part in parts[:-1]:
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise MietError(f"{where}: '{dotted}' sets a key inside a value")
        table[parts[-1]] = value
    return out


def flatten(nested: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The inverse of `nest`: every leaf as a dotted key."""
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _upgrade(data: dict[str, Any]) -> dict[str, Any]:
    fed = data.get("fed")
    if not isinstance(fed, dict) or not any(k in fed for k in LEGACY_FED):
        return data
    fed = dict(fed)
    for old, (table, key) in LEGACY_FED.items():
        if old in fed:
            value = fed.pop(old)
            current = fed.get(table)
            fed[table] = {key: value, **(current if isinstance(current, dict) else {})}
    return {**data, "fed": fed}


def _with_plugins(data: dict[str, Any]) -> dict[str, Any]:
    """Load `run.plugins` (before any name is checked) and keep them as absolute paths."""
    from miet_fed.plugins import load_plugins, resolve

    run = data.get("run")
    if not isinstance(run, dict) or "plugins" not in run:
        return data
    value = run["plugins"]
    from_cli = isinstance(value, CliValue)
    paths = tuple(resolve(p) for p in coerce("run.plugins", value, tuple[str, ...], from_cli))
    load_plugins(paths)
    return {**data, "run": {**run, "plugins": list(paths)}}


def _build_section(sec_cls: type, default: Any, raw: dict[str, Any], prefix: str, source: str):
    hints = typing.get_type_hints(sec_cls)
    table = next((f for f in fields(sec_cls) if f.metadata.get("table")), None)
    keys = [f.name for f in fields(sec_cls) if f is not table]
    values: dict[str, Any] = {}
    tables: dict[str, Any] = {}
    for key, value in raw.items():
        if table is not None and isinstance(value, dict):
            tables[key] = value
            continue
        if key not in keys:
            raise MietError(
                f"unknown key '{prefix}.{key}' in {source}; valid: "
                + ", ".join(f"{prefix}.{k}" for k in keys)
            )
        from_cli = isinstance(value, CliValue)
        if _is_table_list(hints[key]):
            values[key] = _table_list(hints[key], value, f"{prefix}.{key}", source, from_cli)
            continue
        values[key] = coerce(
            f"{prefix}.{key}", str(value) if from_cli else value, hints[key], from_cli
        )
    if table is not None:
        chosen = values.get(table.metadata["table"], getattr(default, table.metadata["table"]))
        params = _strategy_tables(tables, chosen, source)
        if params is not None:
            values[table.name] = params
    if default is None:
        obj = sec_cls(**values)
        validate(obj, prefix)
        return obj
    return replace(default, **values)


def _is_table_list(typ: Any) -> bool:
    """`tuple[SomeSection, ...]`: a TOML array of tables (`[[data.tasks]]`)."""
    args = typing.get_args(typ)
    return typing.get_origin(typ) is tuple and bool(args) and is_dataclass(args[0])


def _table_list(typ: Any, value: Any, where: str, source: str, from_cli: bool) -> tuple:
    """Each table of a `[[section.key]]` array built and checked as its own section."""
    if from_cli:
        raise MietError(
            f"{where} is a list of tables: write one [[{where}]] table each in a config file "
            "(miet-fed simulate FILE.toml), not --set"
        )
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, dict) for v in value):
        raise MietError(f"{where} in {source} must be [[{where}]] tables, got {value!r}")
    cls = typing.get_args(typ)[0]
    out = []
    for i, table in enumerate(value):
        at = f"{where}[{i + 1}]"
        try:
            out.append(_build_section(cls, None, table, at, source))
        except MietError as exc:  # name the table: data.tasks.x -> data.tasks[2].x
            text = str(exc).replace(f"{where}.", f"{at}.")
            raise MietError(text if at in text else f"{text} ({at})") from None
    return tuple(out)


def _strategy_tables(tables: dict[str, Any], strategy: str, source: str) -> Any:
    """Every `[fed.<strategy>]` table checked (names, keys, ranges); the chosen strategy's
    parameters returned (None: its defaults)."""
    chosen = None
    for name, table in tables.items():
        from miet_fed.federation.strategies import STRATEGIES

        if name not in STRATEGIES:
            with_params = [n for n, s in STRATEGIES.items() if has_params(s.Params)]
            raise MietError(
                f"unknown table [fed.{name}] in {source}: not a strategy with parameters; "
                f"valid: {', '.join(with_params)}"
            )
        params_cls = strategy_params_class(name)
        if not has_params(params_cls):
            raise MietError(f"[fed.{name}] in {source}: strategy '{name}' has no parameters")
        params = _build_section(params_cls, None, table, f"fed.{name}", source)
        if name == strategy:
            chosen = params
    return chosen


def _refuse(cls: type, data: dict[str, Any]) -> None:
    """Another command's key (`cls.refused`: key -> why) is a one-line error naming the
    command it belongs to, not an unknown key nor a value silently ignored."""
    for dotted, why in getattr(cls, "refused", {}).items():
        section, key = dotted.split(".", 1)
        table = data.get(section)
        if isinstance(table, dict) and key in table:
            raise MietError(f"{dotted} {why}")


def build_config(cls: type[C], data: dict[str, Any], source: str = "config") -> C:
    """Nested dict (as read from TOML) -> frozen config, with every key and type checked."""
    data = _with_plugins(_upgrade(data))
    sections = sections_of(cls)
    for name in data:
        if name not in sections:
            raise MietError(
                f"unknown section [{name}] in {source}; valid: {', '.join(sorted(sections))}"
            )
    _refuse(cls, data)
    defaults = cls()
    built = {}
    for name, sec_cls in sections.items():
        raw = data.get(name, {})
        if not isinstance(raw, dict):
            raise MietError(f"[{name}] in {source} must be a table of keys")
        built[name] = _build_section(sec_cls, getattr(defaults, name), raw, name, source)
    return cls(**built)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """['model.k=9', 'fed.fedprox.mu=0.1'] -> nested overrides, typed later by `build_config`."""
    flat: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair or "." not in pair.split("=", 1)[0]:
            raise MietError(f"--set expects section.key=value, got '{pair}' (e.g. model.k=9)")
        dotted, value = pair.split("=", 1)
        flat[dotted.strip()] = CliValue(value.strip())
    return nest(flat, "--set")


def read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise MietError(f"config file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8-sig")  # editors may add a byte-order mark
        return tomllib.loads(text)
    except UnicodeDecodeError as exc:
        raise MietError(
            f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8 (TOML requires it)"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise MietError(f"{path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise MietError(f"cannot read {path}: {exc.strerror or exc}") from None


def check_contained(out: str, source: Path | None) -> None:
    """A config file (perhaps someone else's) may only write inside the results folder; a path
    elsewhere must be chosen on the command line (--out), where the user sees it."""
    from miet_fed.results import RESULTS_ROOT

    root = (Path.cwd() / RESULTS_ROOT).resolve()
    target = (Path.cwd() / Path(out).expanduser()).resolve()
    if target == root or not target.is_relative_to(root):
        raise MietError(
            f"run.out = {out!r} in {source} is outside {RESULTS_ROOT}/: a config file may only "
            f"name a folder inside {RESULTS_ROOT}/ (e.g. '{RESULTS_ROOT}/my-run'); "
            "pass --out to write elsewhere"
        )


def merge(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Overrides on top of a config's tables (an `Extend` value adds to the list it finds)."""
    out = dict(data)
    for key, value in overrides.items():
        current = out.get(key)
        if isinstance(value, dict):
            if key in out and not isinstance(current, dict):
                raise MietError(f"[{key}] must be a table of keys")
            out[key] = merge(current or {}, value)
        elif isinstance(value, Extend):
            out[key] = [*(current if isinstance(current, list) else []), *value]
        else:
            out[key] = value
    return out


def load_config(cls: type[C], path: Path | None, overrides: dict[str, Any]) -> C:
    """TOML file (optional), then overrides on top, into a validated frozen config."""
    data = read_toml(path) if path is not None else {}
    run = data.get("run")
    if isinstance(run, dict) and isinstance(run.get("out"), str) and run["out"]:
        check_contained(run["out"], path)
    return build_config(cls, merge(data, overrides), str(path) if path else "overrides")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config as nested plain data (lists for tuples); a strategy's parameters as the table
    named after it (left out when it has none)."""
    out: dict[str, Any] = {}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if f.metadata.get("table"):
            if value is not None and fields(value):
                out[getattr(cfg, f.metadata["table"])] = to_dict(value)
        elif is_dataclass(value):
            out[f.name] = to_dict(value)
        elif isinstance(value, tuple) and value and is_dataclass(value[0]):
            out[f.name] = [to_dict(v) for v in value]
        else:
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def toml_value(value: Any) -> str:
    if isinstance(value, dict):  # an inline table (a [[section.key]] entry)
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list) and any(isinstance(v, dict) for v in value):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)


def toml_text(tables: dict[str, Any], prefix: str = "") -> str:
    """Nested tables as TOML (the format `load_config` reads back)."""
    lines = []
    for name, values in tables.items():
        lines.append(f"[{prefix}{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items() if not isinstance(v, dict)]
        lines.append("")
        sub = {k: v for k, v in values.items() if isinstance(v, dict)}
        if sub:
            lines.append(toml_text(sub, f"{prefix}{name}."))
    return "\n".join(lines)


def to_toml(cfg: Any) -> str:
    """Serialise a config (the format `load_config` reads back)."""
    return toml_text(to_dict(cfg))
