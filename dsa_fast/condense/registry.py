"""A name -> entry table that the command's choices and help read: the methods
(``methods/__init__.py``), the datasets (``data.py``) and the networks (``networks.py``) are each one.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Dict, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Mapping, Generic[T]):
    """Entries in the order they were added; ``what`` names an entry in the errors ('method')."""

    def __init__(self, what: str):
        self.what = what
        self._entries: Dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Add ``entry`` as ``name`` (again the same entry: nothing changes); returns it."""
        if self._entries.get(name, entry) is not entry:
            raise ValueError(f"dsa_fast.condense: a {self.what} named {name!r} is registered already")
        self._entries[name] = entry
        return entry

    def remove(self, name: str) -> None:
        self.entry(name)
        del self._entries[name]

    def entry(self, name: str) -> T:
        """The entry ``name``, or a ValueError naming the entries there are."""
        if name not in self._entries:
            raise ValueError(f"dsa_fast.condense: unknown {self.what} {name!r}; expected one of {tuple(self)}")
        return self._entries[name]

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
