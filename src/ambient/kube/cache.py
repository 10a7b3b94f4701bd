"""The controller's informer caches: each watched object's view, typed object and problems.

One store per kind, keyed by (namespace, name). ``upsert`` compares the new view with
the stored one and converts only when it differs, so status writes, kubelet heartbeats
in pod status and other fields the mesh does not read cost a dict comparison. The
status of the kinds whose status the controller writes (Gateways, routes) is kept
apart from the view: it is what "write only when changed" compares with.

Pods have their own index, every pod including those without an IP yet, for the
CA's questions (``PodLookup``): which node a pod is on, which pods of a service
account run on a node.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ambient.config.configset import Ref
from ambient.kube.convert import Converted, convert, convertible, view
from ambient.kube.kinds import KindInfo

__all__ = ["ClusterCache", "Entry", "PodInfo", "PodLookup", "pod_info"]

_STATUS_KINDS = frozenset({"Gateway", "HTTPRoute", "GRPCRoute"})


@dataclass
class Entry:
    """One object as last seen: its view, conversion (None for kinds not converted), the
    server's metadata the controller needs, and its status for the kinds it writes."""

    info: KindInfo
    namespace: str
    name: str
    uid: str
    resource_version: str
    generation: int | None
    view: dict[str, Any]
    converted: Converted | None
    status: Any = None
    owners: tuple[Mapping[str, Any], ...] = ()

    @property
    def ref(self) -> Ref:
        return Ref(self.info.kind, self.namespace, self.name)

    @property
    def invalid(self) -> bool:
        """Converted with errors (its object is left out, or a stand-in)."""
        return self.converted is not None and bool(self.converted.errors)


@dataclass(frozen=True)
class PodInfo:
    """What the CA asks about a pod."""

    namespace: str
    name: str
    uid: str
    node: str
    service_account: str
    ips: tuple[str, ...]
    phase: str


class PodLookup(Protocol):
    """The pod questions a CA asks the controller's caches (Istio's node authorizer)."""

    def pod(self, namespace: str, name: str) -> PodInfo | None:
        """The pod, if it exists."""
        ...

    def pods_on_node(self, node: str) -> tuple[PodInfo, ...]:
        """Every pod bound to ``node``."""
        ...

    def pods_of(self, namespace: str, service_account: str, node: str) -> tuple[PodInfo, ...]:
        """The pods of ``namespace/service_account`` bound to ``node``."""
        ...


def pod_info(raw: Mapping[str, Any]) -> PodInfo:
    """What the CA asks about a pod, from its JSON (a watch event or a GET)."""
    meta = raw.get("metadata") or {}
    spec = raw.get("spec") or {}
    status = raw.get("status") or {}
    ips = tuple(p.get("ip") for p in status.get("podIPs") or () if p.get("ip"))
    if not ips and status.get("podIP"):
        ips = (status["podIP"],)
    return PodInfo(
        meta.get("namespace", ""),
        meta.get("name", ""),
        meta.get("uid", ""),
        spec.get("nodeName") or "",
        spec.get("serviceAccountName") or "default",
        ips,
        status.get("phase") or "",
    )


@dataclass
class ClusterCache:
    """Every watched object (see the module docstring); implements ``PodLookup``."""

    indexed: frozenset[str] = frozenset()  # kinds converted for the index (others: cache only)
    stores: dict[str, dict[tuple[str, str], Entry]] = field(default_factory=dict)
    _pods: dict[tuple[str, str], PodInfo] = field(default_factory=dict)
    _on_node: dict[str, dict[tuple[str, str], PodInfo]] = field(default_factory=dict)

    def get(self, kind: str, namespace: str, name: str) -> Entry | None:
        return self.stores.get(kind, {}).get((namespace, name))

    def entries(self, kind: str) -> Iterator[Entry]:
        return iter(self.stores.get(kind, {}).values())

    def count(self, kind: str) -> int:
        return len(self.stores.get(kind, {}))

    def upsert(self, info: KindInfo, raw: Mapping[str, Any]) -> tuple[Entry, bool]:
        """Store ``raw``; returns the entry and whether its view changed (or is new)."""
        meta = raw.get("metadata") or {}
        key = (meta.get("namespace", "") if info.namespaced else "", meta.get("name", ""))
        store = self.stores.setdefault(info.kind, {})
        if info.kind == "Pod":
            self._index_pod(key, pod_info(raw))
        doc = view(info, raw)
        old = store.get(key)
        changed = old is None or old.view != doc or old.uid != meta.get("uid", "")
        if changed:
            indexed = info.kind in self.indexed and convertible(info.kind)
            converted = convert(doc) if indexed else None
        else:
            assert old is not None
            converted = old.converted
        entry = Entry(
            info,
            key[0],
            key[1],
            meta.get("uid", ""),
            str(meta.get("resourceVersion", "")),
            meta.get("generation"),
            doc if changed or old is None else old.view,
            converted,
            raw.get("status") if info.kind in _STATUS_KINDS else None,
            tuple(meta.get("ownerReferences") or ()),
        )
        store[key] = entry
        return entry, changed

    def remove(self, kind: str, namespace: str, name: str) -> Entry | None:
        """Forget an object; returns what was stored."""
        key = (namespace, name)
        if kind == "Pod":
            self._index_pod(key, None)
        return self.stores.get(kind, {}).pop(key, None)

    def keys(self, kind: str) -> set[tuple[str, str]]:
        return set(self.stores.get(kind, {}))

    # -- pods, for the CA ----------------------------------------------------------------

    def _index_pod(self, key: tuple[str, str], info: PodInfo | None) -> None:
        old = self._pods.pop(key, None)
        if old is not None:
            on_node = self._on_node.get(old.node)
            if on_node is not None:
                on_node.pop(key, None)
                if not on_node:
                    del self._on_node[old.node]
        if info is not None:
            self._pods[key] = info
            if info.node:
                self._on_node.setdefault(info.node, {})[key] = info

    def pod(self, namespace: str, name: str) -> PodInfo | None:
        return self._pods.get((namespace, name))

    def pods_on_node(self, node: str) -> tuple[PodInfo, ...]:
        return tuple(self._on_node.get(node, {}).values())

    def pods_of(self, namespace: str, service_account: str, node: str) -> tuple[PodInfo, ...]:
        return tuple(
            p
            for p in self._on_node.get(node, {}).values()
            if p.namespace == namespace and p.service_account == service_account
        )

    def invalid(self, kinds: Iterable[str] | None = None) -> Iterator[Entry]:
        """Entries whose conversion found errors."""
        for kind, store in sorted(self.stores.items()):
            if kinds is None or kind in kinds:
                yield from (e for e in store.values() if e.invalid)
