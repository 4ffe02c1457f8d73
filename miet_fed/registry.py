"""Name -> implementation registries: adding a gather, edge network or strategy is one file."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Generic, TypeVar

from miet_fed.errors import MietError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of implementations; unknown names raise a MietError listing the valid ones."""

    def __init__(self, kind: str, package: str | None = None) -> None:
        self.kind = kind
        self._package = package  # modules in this package are imported on first lookup
        self._items: dict[str, T] = {}
        self._loaded = package is None

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            self._items[name] = obj
            return obj

        return deco

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        pkg = importlib.import_module(self._package)
        for mod in pkgutil.iter_modules(pkg.__path__):
            if not mod.name.startswith("_"):
                importlib.import_module(f"{self._package}.{mod.name}")

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def get(self, name: str) -> T:
        self._load()
        if name not in self._items:
            raise MietError(f"unknown {self.kind} '{name}'; valid: {', '.join(self.names())}")
        return self._items[name]

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._items
