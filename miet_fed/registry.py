"""Name -> implementation registries: adding a gather, edge network, strategy or dataset is one
file, in its package or anywhere else (`--plugin PATH`, see `miet_fed.plugins`)."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from miet_fed.errors import MietError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of implementations; unknown names raise a MietError listing the valid ones.

    `package`'s modules (the built-ins) are imported on first lookup. A registration from outside
    the package (a plugin) loads them first, so a plugin that takes a built-in's name is refused
    however early it is loaded.
    """

    def __init__(self, kind: str, package: str | None = None) -> None:
        self.kind = kind
        self._package = package
        self._items: dict[str, T] = {}
        self._where: dict[str, str] = {}  # name -> module that registered it
        self._renamed: dict[str, str] = {}  # earlier name -> current name
        self._loaded = package is None

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            module = getattr(obj, "__module__", "") or ""
            if self._package and not module.startswith(self._package):
                self._load()  # a plugin: the built-ins first, so their names are taken
            if not name or not isinstance(name, str):
                raise MietError(f"a {self.kind} needs a non-empty name, got {name!r}")
            if name in self._items:
                raise MietError(
                    f"{self.kind} '{name}' is already registered (by {self._where[name]}); "
                    "choose another name"
                )
            self._items[name] = obj
            self._where[name] = module or "?"
            return obj

        return deco

    def rename(self, old: str, new: str) -> None:
        """`old` is an earlier name of `new`: a config or run folder written before the rename
        gets a one-line error naming the new one (not a silent alias: results say which)."""
        self._renamed[old] = new

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
            if name in self._renamed:
                raise MietError(
                    f"{self.kind} '{name}' was renamed to '{self._renamed[name]}'; use "
                    f"'{self._renamed[name]}' in the config or on the command line"
                )
            raise MietError(f"unknown {self.kind} '{name}'; valid: {', '.join(self.names())}")
        return self._items[name]

    def items(self) -> Iterator[tuple[str, T]]:
        """(name, implementation) for every registered entry, sorted by name: what a test
        battery loops over, so a new entry is tested the moment it is registered."""
        return iter([(n, self._items[n]) for n in self.names()])

    def origin(self, name: str) -> str:
        """The module that registered `name` (a plugin's is `miet_fed_plugin_...`)."""
        self.get(name)
        return self._where[name]

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items
