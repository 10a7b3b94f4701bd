"""``ConfigSet``: the validated objects of one load, keyed by (kind, namespace, name)."""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from ambient.config.errors import Problem
from ambient.config.resources import (
    DEFAULT_NAMESPACE,
    Deployment,
    Namespace,
    ObjectMeta,
    Pod,
    Resource,
    Service,
    ServiceAccount,
    ServiceEntry,
    WorkloadEntry,
)
from ambient.config.schema import FieldPath, render_path

__all__ = ["ConfigSet", "Origin", "Ref", "changed_refs"]

R = TypeVar("R")


@dataclass(frozen=True, order=True)
class Ref:
    """An object's identity: ``namespace`` is ``""`` for cluster-scoped kinds."""

    kind: str
    namespace: str
    name: str

    @classmethod
    def of(cls, obj: Resource) -> Ref:
        """The ref of ``obj``."""
        return cls(obj.kind, obj.meta.namespace, obj.meta.name)

    def __str__(self) -> str:
        return (
            f"{self.kind} {self.namespace}/{self.name}"
            if self.namespace
            else f"{self.kind} {self.name}"
        )


@dataclass(frozen=True)
class Origin:
    """Where an object was read: file, 1-based document, and index in a ``List``'s items."""

    file: str
    document: int
    item: int | None = None
    # The document as parsed YAML (plain dicts/lists), so the control plane can send an
    # object on to a proxy that validates it again (the waypoint's L7 kinds). Not part
    # of the object's identity or location.
    source: object = field(default=None, compare=False, repr=False, hash=False)
    # The 1-based line where the document starts in ``file``, when known (a location
    # for ``ambient analyze``; not part of the identity either: edits above move it).
    line: int | None = field(default=None, compare=False, repr=False, hash=False)

    @property
    def prefix(self) -> FieldPath:
        """``("items", 3)`` for the fourth item of a List document, else ``()``."""
        return () if self.item is None else ("items", self.item)

    def __str__(self) -> str:
        where = f"{self.file}:{self.document}"
        return where if self.item is None else f"{where} ({render_path(self.prefix)})"


@dataclass(frozen=True)
class ConfigSet:
    """Validated objects with where they came from, and the warnings of the load."""

    objects: Mapping[Ref, Resource] = field(default_factory=dict)
    origins: Mapping[Ref, Origin] = field(default_factory=dict)
    warnings: tuple[Problem, ...] = ()

    def __iter__(self) -> Iterator[Resource]:
        """All objects, sorted by kind, namespace and name."""
        return iter(self.objects[ref] for ref in sorted(self.objects))

    def __len__(self) -> int:
        return len(self.objects)

    def get(self, kind: str, namespace: str, name: str) -> Resource | None:
        """The object with this identity, or None."""
        return self.objects.get(Ref(kind, namespace, name))

    def origin(self, obj: Resource) -> Origin | None:
        """Where ``obj`` was read."""
        return self.origins.get(Ref.of(obj))

    def by_kind(self, kind: str) -> tuple[Resource, ...]:
        """Objects of ``kind`` (any class, e.g. ``GenericResource``), by namespace and name."""
        return tuple(self.objects[ref] for ref in sorted(self.objects) if ref.kind == kind)

    def of_type(self, cls: type[R]) -> tuple[R, ...]:
        """Objects that are instances of ``cls``, by kind, namespace and name."""
        return tuple(obj for obj in self if isinstance(obj, cls))

    def namespaces(self) -> tuple[Namespace, ...]:
        """Declared namespaces plus implicit ones: ``default`` and any namespace in use.

        A namespace that objects use but nobody declares exists unlabelled, as if
        created with ``kubectl create namespace``.
        """
        declared = {ns.meta.name: ns for ns in self.of_type(Namespace)}
        used = {ref.namespace for ref in self.objects if ref.namespace} | {DEFAULT_NAMESPACE}
        for name in used - declared.keys():
            declared[name] = Namespace(ObjectMeta(name, ""))
        return tuple(declared[name] for name in sorted(declared))

    def namespace(self, name: str) -> Namespace | None:
        """The namespace ``name`` (declared or implicit), or None if nothing uses it."""
        return next((ns for ns in self.namespaces() if ns.meta.name == name), None)

    def pods(self) -> tuple[Pod, ...]:
        """Pods declared directly (not those a Deployment will create)."""
        return self.of_type(Pod)

    def deployments(self) -> tuple[Deployment, ...]:
        """Deployments."""
        return self.of_type(Deployment)

    def services(self) -> tuple[Service, ...]:
        """Services."""
        return self.of_type(Service)

    def service_accounts(self) -> tuple[ServiceAccount, ...]:
        """Declared service accounts (``default`` exists implicitly in every namespace)."""
        return self.of_type(ServiceAccount)

    def workload_entries(self) -> tuple[WorkloadEntry, ...]:
        """WorkloadEntries."""
        return self.of_type(WorkloadEntry)

    def service_entries(self) -> tuple[ServiceEntry, ...]:
        """ServiceEntries."""
        return self.of_type(ServiceEntry)


def changed_refs(old: ConfigSet, new: ConfigSet) -> list[Ref]:
    """Refs whose object differs (by identity: objects are immutable) between two configs."""
    if old is new or old.objects is new.objects:
        return []
    before, after = old.objects, new.objects
    if len(before) == len(after) and all(map(operator.is_, before.keys(), after.keys())):
        # A relabelled config keeps its keys in place: compare position by position, by
        # identity, in C (no hashing of refs); otherwise look each ref up.
        return list(
            itertools.compress(after.keys(), map(operator.is_not, before.values(), after.values()))
        )
    changed = [ref for ref, obj in after.items() if before.get(ref) is not obj]
    if len(before) != len(after) - sum(1 for ref in changed if ref not in before):
        changed += [ref for ref in before if ref not in after]
    return changed
