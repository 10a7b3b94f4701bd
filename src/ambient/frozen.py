"""An immutable, hashable mapping, and deep freezing of parsed YAML values."""

from __future__ import annotations

from collections.abc import ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from typing import TypeVar

__all__ = ["FrozenMap", "RecursiveValueError", "deep_freeze"]

K = TypeVar("K")
V = TypeVar("V")


class FrozenMap(Mapping[K, V]):
    """A read-only mapping that keeps insertion order and can be hashed."""

    __slots__ = ("_data", "_hash")

    def __init__(self, items: Mapping[K, V] | Iterable[tuple[K, V]] = ()) -> None:
        self._data: dict[K, V] = dict(items)
        self._hash: int | None = None

    def __getitem__(self, key: K) -> V:
        return self._data[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    # The underlying dict's views and membership test: the same results as Mapping's
    # generic ones, at C speed (indexes of thousands of entries iterate these).
    def __contains__(self, key: object) -> bool:
        return key in self._data

    def keys(self) -> KeysView[K]:
        return self._data.keys()

    def items(self) -> ItemsView[K, V]:
        return self._data.items()

    def values(self) -> ValuesView[V]:
        return self._data.values()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenMap):
            return self._data == other._data
        return super().__eq__(other)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._data.items()))
        return self._hash

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"


MAX_DEPTH = 100


class RecursiveValueError(ValueError):
    """A YAML alias made a value contain itself, or nesting is absurdly deep."""


def deep_freeze(value: object) -> object:
    """Turn mappings into ``FrozenMap`` and lists into tuples, all the way down.

    Values shared through YAML aliases are frozen once; a value that contains
    itself, or nesting deeper than ``MAX_DEPTH``, raises ``RecursiveValueError``.
    """
    done: dict[int, object] = {}
    active: set[int] = set()

    def freeze(item: object, depth: int) -> object:
        if not isinstance(item, (Mapping, list, tuple)):
            return item
        ident = id(item)
        if ident in done:
            return done[ident]
        if ident in active:
            raise RecursiveValueError("a YAML alias refers to a value that contains it")
        if depth > MAX_DEPTH:
            raise RecursiveValueError(f"nested more than {MAX_DEPTH} levels deep")
        active.add(ident)
        frozen: object
        if isinstance(item, Mapping):
            frozen = FrozenMap((k, freeze(v, depth + 1)) for k, v in item.items())
        else:
            frozen = tuple(freeze(v, depth + 1) for v in item)
        active.discard(ident)
        done[ident] = frozen
        return frozen

    return freeze(value, 0)
