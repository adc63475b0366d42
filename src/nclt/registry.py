"""Name -> builder registries.

Every pluggable piece (losses, backbones, heads, datasets, samplers, methods) is registered
under a short, lowercase, permanent name. A registry refuses duplicates, and an unknown name
is an error that lists the known names and suggests the closest one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from nclt.errors import ConfigError, closest

T = TypeVar("T", bound=Callable[..., Any])


class Registry(Generic[T]):
    """A mapping from names to builders (classes or factory functions)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; duplicate names are refused."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise KeyError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """The builder registered under ``name``; an unknown name raises ConfigError."""
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r}.{closest(name, self._items)} "
                f"Known: {', '.join(sorted(self._items))}"
            ) from None

    def build(self, name: str, **kwargs: Any) -> Any:
        """Call the builder registered under ``name`` with keyword arguments."""
        return self.get(name)(**kwargs)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)
