"""Plugins: Python files outside the package that register gathers, edge networks, strategies
or datasets with the same decorators the built-ins use (`@GATHERS.register("name")`, ...).

`--plugin PATH` (repeatable) or `run.plugins = ["PATH", ...]` in a config. The config loader
loads them before it checks any name (`miet_fed.config.build_config`), and the paths travel in
the config: the run spec every ClientApp and ServerApp reads (Ray workers, `flwr run`
processes) and the backbone actor's arguments, so each process loads them before its first
registry lookup. Loading is idempotent per file and process. A plugin that cannot be imported,
or registers a name already taken, is a one-line MietError naming the file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from miet_fed.errors import MietError

#: Resolved path -> its module, in this process.
_LOADED: dict[str, ModuleType] = {}


def resolve(path: str) -> str:
    """An absolute path (a plugin named relative to the working directory stays the same file
    in a Ray worker or a `flwr run` process started elsewhere)."""
    return str(Path(path).expanduser().absolute())


def module_name(path: str) -> str:
    digest = hashlib.sha256(path.encode()).hexdigest()[:10]
    stem = "".join(c if c.isalnum() else "_" for c in Path(path).stem)
    return f"miet_fed_plugin_{stem}_{digest}"


def load_plugin(path: str) -> ModuleType:
    """Import one plugin file (once per process)."""
    full = resolve(path)
    if full in _LOADED:
        return _LOADED[full]
    file = Path(full)
    if "\x00" in full:
        raise MietError(f"plugin path {path!r} contains a NUL byte")
    if not file.is_file():
        raise MietError(f"plugin {path}: no such file; give the path of a .py file")
    if file.suffix != ".py":
        raise MietError(f"plugin {path}: not a .py file; give the path of a Python file")
    name = module_name(full)
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise MietError(f"plugin {path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look classes up by module name
    try:
        spec.loader.exec_module(module)
    except MietError as exc:  # a taken name, or the plugin's own check
        del sys.modules[name]
        raise MietError(f"plugin {path}: {exc}") from None
    except SyntaxError as exc:
        del sys.modules[name]
        raise MietError(f"plugin {path}: syntax error on line {exc.lineno}: {exc.msg}") from None
    except BaseException as exc:  # noqa: BLE001 - whatever a user's file raises, one line
        del sys.modules[name]
        if isinstance(exc, KeyboardInterrupt):
            raise
        what = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        raise MietError(
            f"plugin {path} failed to import: {type(exc).__name__}" + (f": {what}" if what else "")
        ) from None
    _LOADED[full] = module
    return module


def load_plugins(paths: Iterable[str]) -> None:
    for path in paths:
        load_plugin(path)


def loaded() -> list[str]:
    """Paths of the plugins loaded in this process, in load order."""
    return list(_LOADED)
