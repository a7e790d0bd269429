"""Packages whose public names resolve on first use (PEP 562).

A package ``__init__`` that imports its submodules eagerly makes ``import decaylab.commands.prepare`` (or any
command-line module below the package) pay for torch before a single argument is parsed. With
``lazy_exports`` the package only records where each name lives; the submodule is imported the first time
the name is read, and ``from package import name`` works as before.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any, Callable


class _LazyPackage(types.ModuleType):
    """Keeps an exported name bound to the exported object when a submodule of the same name is imported.

    Importing ``decaylab.evaluation.evaluate`` binds the package attribute ``evaluate`` to that submodule; the
    package exports the function ``evaluate`` defined in it, so the function is bound instead (as an eager
    ``from .evaluate import evaluate`` in ``__init__`` would have left it).
    """

    def __setattr__(self, name: str, value: Any) -> None:
        targets = self.__dict__.get("_lazy_targets", {})
        if isinstance(value, types.ModuleType) and targets.get(name) == value.__name__ and hasattr(value, name):
            value = getattr(value, name)
        super().__setattr__(name, value)


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``; ``exports`` maps a public name to the module defining it."""
    module = sys.modules[package]
    module.__class__ = _LazyPackage
    module._lazy_targets = dict(exports)
    namespace = module.__dict__

    def __getattr__(name: str) -> Any:
        if name in exports:
            value = getattr(importlib.import_module(exports[name]), name)
            namespace[name] = value  # later reads skip this function
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
