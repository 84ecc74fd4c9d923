"""Packages whose exports are imported on first use (PEP 562), so that ``import anchorlens.cli`` imports no torch.

``lazy_exports(__name__, {name: module})`` at the end of a package's ``__init__``: ``package.name`` imports
``module`` then, once, and keeps the value; ``dir(package)`` lists every export. A name that is also a
subpackage's name (``anchorlens.study`` the function and the folder) keeps the export, as an eager
``from ... import`` did.
"""

from __future__ import annotations

import importlib
import sys
import types


class _LazyPackage(types.ModuleType):
    _exports: dict[str, str]

    def __getattr__(self, name: str):
        module = self.__dict__.get("_exports", {}).get(name)
        if module is None:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        self.__dict__[name] = value
        return value

    def __setattr__(self, name: str, value) -> None:
        # the import system binds a loaded subpackage onto its parent; an export of the same name wins
        if isinstance(value, types.ModuleType) and name in self.__dict__.get("_exports", {}):
            self.__dict__.pop(name, None)
            return
        super().__setattr__(name, value)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._exports))


def lazy_exports(package: str, exports: dict[str, str]) -> None:
    """Make ``package`` (a loaded module's name) import each of ``exports`` (name -> module) on first use."""
    module = sys.modules[package]
    module.__class__ = _LazyPackage
    module.__dict__["_exports"] = dict(exports)
