"""A tiny name -> factory registry, one per kind of thing (spaces, estimators, methods).

Modelled on timm's registries: a decorator registers, ``get`` fails with the list of valid names.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from nasbench.errors import unknown_choice

T = TypeVar("T")
_ALL: dict[tuple[str, str], Registry] = {}


def _registry(home: str, kind: str) -> Registry:
    importlib.import_module(home)
    return _ALL[(home, kind)]


class Registry(Generic[T]):
    """Maps names to classes or factories of one kind."""

    def __init__(self, kind: str, package: str | None = None) -> None:
        self.kind = kind
        self._package = package
        # the module that holds this registry: pickling refers to it by name (below)
        self._home = sys._getframe(1).f_globals.get("__name__", "")
        _ALL[(self._home, kind)] = self
        self._entries: dict[str, T] = {}
        self._discovered = False

    def __reduce__(self) -> tuple:
        """Pickle by reference: a sweep launcher (joblib/loky, submitit) that ships the task
        function to another process must find the one live registry there, not an empty copy."""
        return (_registry, (self._home, self.kind))

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator: ``@REGISTRY.register("name")``."""

        def add(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return add

    def _discover(self) -> None:
        """Import every module of the package once, so that a new file registers itself."""
        if self._discovered or self._package is None:
            return
        self._discovered = True
        pkg = importlib.import_module(self._package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self._package}.{info.name}")

    def get(self, name: str) -> T:
        self._discover()
        if name not in self._entries:
            raise unknown_choice(self.kind, name, self._entries)
        return self._entries[name]

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._discover()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
