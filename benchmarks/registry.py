"""Named registries for models, datasets and methods.

The harness looks every component up by name here, so no code branches on a
model's or method's name, and a plug-in registers the same way a built-in does.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field
from typing import Generic, Iterator, TypeVar

T = TypeVar("T")

BUILT_IN = "built-in"
# The origin that ``register`` records when its caller names none: "built-in",
# or the plug-in that ``benchmarks.plugins`` is importing at the moment.
_LOADING_ORIGIN: contextvars.ContextVar[str] = contextvars.ContextVar("registry_origin", default=BUILT_IN)


@contextlib.contextmanager
def loading_origin(origin: str) -> Iterator[None]:
    """Record ``origin`` for every entry registered without an explicit origin inside the block.

    Example:
        >>> with loading_origin('suite plugin "my_pkg.models"'):
        ...     pass  # import the plug-in here
    """
    token = _LOADING_ORIGIN.set(origin)
    try:
        yield
    finally:
        _LOADING_ORIGIN.reset(token)


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

    def register(self, name: str, origin: str | None = None):
        """Return a decorator that registers its argument under ``name``.

        Without ``origin`` the entry is "built-in", or, while
        ``benchmarks.plugins`` imports a plug-in, that plug-in's origin.
        """
        origin = origin if origin is not None else _LOADING_ORIGIN.get()

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

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a plug-in that failed half-way through its import leaves nothing behind)."""
        self._entries.pop(name, None)
        self._origins.pop(name, None)

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
