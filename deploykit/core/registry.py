"""Name -> item registries with duplicate checks and close-match suggestions.

A registry names the modules that fill it (`members`) and imports them itself on the first lookup, so what
is registered never depends on who imported what first; importing the members stays lazy, so listing the
CLI's commands does not build torch.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Generic, Iterator, TypeVar

from deploykit.core.errors import DeployKitError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection; an unknown name is an error that lists the closest names."""

    def __init__(self, kind: str, members: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.members = members  # modules whose import registers the items, imported on first lookup
        self._items: dict[str, T] = {}
        self._loaded = not members

    def add(self, name: str, item: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = item
        return item

    def load(self) -> "Registry[T]":
        """Import every member module (once); each registers its items as it is imported."""
        if not self._loaded:
            self._loaded = True  # first: a member that looks itself up while importing must not recurse
            for module in self.members:
                importlib.import_module(module)
        return self

    def get(self, name: str) -> T:
        self.load()
        if name not in self._items:
            raise DeployKitError(self.unknown_message(name), fix=self._list_hint())
        return self._items[name]

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, self.load()._items, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        return f"unknown {self.kind} {name!r}{hint}"

    def _list_hint(self) -> str:
        if len(self._items) <= 10:
            return f"choose one of: {', '.join(self.names())}"
        return f"run `deploykit {self.kind}s` to list them"

    def names(self) -> list[str]:
        return sorted(self.load()._items)

    def __contains__(self, name: object) -> bool:
        return name in self.load()._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.load()._items)
