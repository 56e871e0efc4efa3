"""A named registry of small factories (timm's ``_registry.py`` style): model sources, experts."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

from .errors import InputError


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable] = {}

    def register(self, name: str):
        def wrap(factory):
            self._factories[name] = factory
            return factory

        return wrap

    def list(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._factories if fnmatch.fnmatch(n, pattern))

    def get(self, name: str, **kwargs):
        if name not in self._factories:
            raise InputError(f"unknown {self.kind} {name!r}", fix=f"choose from {self.list()}")
        return self._factories[name](**kwargs)
