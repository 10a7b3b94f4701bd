"""``FrozenMap`` lives in :mod:`ambient.frozen` (importable without the config loader)."""

from ambient.frozen import FrozenMap, RecursiveValueError, deep_freeze

__all__ = ["FrozenMap", "RecursiveValueError", "deep_freeze"]
