"""Which kinds the loader accepts, under which apiVersions, and how each is parsed.

Other packages plug in strict validators for kinds that load as
``GenericResource`` by default::

    from ambient.config import register_kind, resource_schema
    register_kind(["security.istio.io/v1", "security.istio.io/v1beta1"],
                  "AuthorizationPolicy", resource_schema(AuthorizationPolicy, SPEC))

A kind registered as generic may be replaced once; replacing a strict
registration is a programming error. Registration must happen before loading
(import the owning package first). Kinds are keyed by name alone: one kind name
means one kind (so Istio's ``networking.istio.io`` Gateway is not accepted).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ambient.config.kinds import BUILTIN_KINDS, GENERIC_KINDS, generic_schema
from ambient.config.resources import Resource
from ambient.config.schema import Node

__all__ = ["DEFAULT_REGISTRY", "KindSpec", "Registry", "builtin_registry", "register_kind"]


@dataclass(frozen=True)
class KindSpec:
    """A registered kind: its accepted apiVersions and the node that parses a document."""

    kind: str
    api_versions: tuple[str, ...]
    parser: Node[Resource]
    generic: bool = False


class Registry:
    """A set of ``KindSpec`` keyed by kind name."""

    def __init__(self, specs: Iterable[KindSpec] = ()) -> None:
        self._specs: dict[str, KindSpec] = {spec.kind: spec for spec in specs}

    def register(self, api_versions: Iterable[str], kind: str, parser: Node[Resource]) -> None:
        """Accept ``kind`` under ``api_versions`` (``group/version``, or ``v1`` for core)."""
        self._add(KindSpec(kind, tuple(api_versions), parser))

    def register_generic(self, api_versions: Iterable[str], kind: str) -> None:
        """Accept ``kind`` as a ``GenericResource`` until a strict parser is registered."""
        self._add(KindSpec(kind, tuple(api_versions), generic_schema(), generic=True))

    def _add(self, spec: KindSpec) -> None:
        if not spec.api_versions:
            raise ValueError(f"kind {spec.kind!r} needs at least one apiVersion")
        current = self._specs.get(spec.kind)
        if current is not None and not current.generic:
            raise ValueError(f"kind {spec.kind!r} is already registered")
        self._specs[spec.kind] = spec

    def override(self, api_versions: Iterable[str], kind: str, parser: Node[Resource]) -> None:
        """Replace how ``kind`` is parsed (a registry for another source of objects, such as
        an API server, starts from a ``copy`` of the default one)."""
        self._specs[kind] = KindSpec(kind, tuple(api_versions), parser)

    def lookup(self, kind: str) -> KindSpec | None:
        """The registration for ``kind``, or None."""
        return self._specs.get(kind)

    def kinds(self) -> tuple[str, ...]:
        """The registered kind names, sorted."""
        return tuple(sorted(self._specs))

    def copy(self) -> Registry:
        """An independent copy (for tests, or for loading with extra kinds)."""
        return Registry(self._specs.values())


def builtin_registry() -> Registry:
    """A registry with the built-in kinds and the generic placeholders."""
    registry = Registry()
    for api_versions, kind, parser in BUILTIN_KINDS:
        registry.register(api_versions, kind, parser)
    for api_versions, kind in GENERIC_KINDS:
        registry.register_generic(api_versions, kind)
    return registry


DEFAULT_REGISTRY = builtin_registry()


def register_kind(api_versions: Iterable[str], kind: str, parser: Node[Resource]) -> None:
    """Register ``kind`` in the default registry (see the module docstring)."""
    DEFAULT_REGISTRY.register(api_versions, kind, parser)
