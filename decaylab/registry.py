"""A tiny name -> object registry whose lookups answer typos with the closest valid names."""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


def closest(name: str, choices: list[str] | tuple[str, ...], n: int = 3) -> str:
    """A 'did you mean' phrase for error messages ('' when nothing is close)."""
    near = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
    return f" Did you mean {' or '.join(repr(c) for c in near)}?" if near else ""


class Registry(Generic[T]):
    """Maps public names (used in configs and on the command line) to classes or functions."""

    def __init__(self, what: str):
        self.what = what
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def wrap(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.what} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return wrap

    def get(self, name: str) -> T:
        if name not in self._items:
            raise ValueError(
                f"unknown {self.what} {name!r}.{closest(name, self.names())} Available: {', '.join(self.names())}"
            )
        return self._items[name]

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def items(self):
        return self._items.items()
