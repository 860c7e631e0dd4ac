"""Name -> item registries with duplicate checks and close-match suggestions."""

from __future__ import annotations

import difflib
from typing import Generic, Iterator, TypeVar

from deploykit.core.errors import DeployKitError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection; an unknown name is an error that lists the closest names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        if name not in self._items:
            raise DeployKitError(self.unknown_message(name), fix=self._list_hint())
        return self._items[name]

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, self._items, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        return f"unknown {self.kind} {name!r}{hint}"

    def _list_hint(self) -> str:
        if len(self._items) <= 10:
            return f"choose one of: {', '.join(self.names())}"
        return f"run `deploykit {self.kind}s` to list them"

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
