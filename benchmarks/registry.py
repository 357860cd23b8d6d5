"""Named registries for models, datasets and methods.

The harness looks every component up by name here, so no code branches on a
model's or method's name, and a plug-in registers the same way a built-in does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """An unknown registry name; ``str()`` gives a one-line message with the valid names."""

    def __init__(self, kind: str, name: str, valid: list[str]) -> None:
        super().__init__(name)
        self.kind = kind
        self.name = name
        self.valid = valid

    def __str__(self) -> str:
        return f"unknown {self.kind} {self.name!r}; valid values: {', '.join(self.valid)}"


@dataclass
class Registry(Generic[T]):
    """A mapping from names to factories, with the origin of each entry."""

    kind: str
    _entries: dict[str, T] = field(default_factory=dict)
    _origins: dict[str, str] = field(default_factory=dict)

    def register(self, name: str, origin: str = "built-in"):
        """Return a decorator that registers its argument under ``name``."""

        def decorate(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered (from {self._origins[name]})")
            self._entries[name] = entry
            self._origins[name] = origin
            return entry

        return decorate

    def get(self, name: str) -> T:
        """Return the entry for ``name``; raise ``UnknownNameError`` listing the valid names."""
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, sorted(self._entries)) from None

    def origin(self, name: str) -> str:
        """Return where ``name`` was registered from."""
        return self._origins[name]

    def names(self) -> list[str]:
        """Return the registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


MODELS: Registry = Registry("model")
DATASETS: Registry = Registry("dataset")
METHODS: Registry = Registry("method")
