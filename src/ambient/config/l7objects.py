"""The L7 objects a waypoint enforces, as the xDS resources that carry them.

Istio's istiod translates HTTPRoutes, VirtualServices, DestinationRules,
RequestAuthentications and targetRef'd AuthorizationPolicies into Envoy
listeners, routes and clusters for each waypoint. Here the control plane sends
the objects themselves, one ``WaypointResource`` each, named
``<Kind>/<namespace>/<name>`` and carrying the manifest the user wrote (as
JSON); the node proxy hosting a waypoint validates each one again with the same
loader (``ambient.waypoint.config.L7Config``). This module is the shared
vocabulary of both ends (the control plane's index and the waypoint).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from ambient.config import ConfigSet
from ambient.config.configset import Ref
from ambient.config.frozen import FrozenMap

__all__ = [
    "L7_KINDS",
    "L7Manifests",
    "is_l7_object",
    "manifest_json",
    "resource_name",
    "waypoint_manifests",
]

L7_KINDS = frozenset(
    {
        "HTTPRoute",
        "GRPCRoute",
        "VirtualService",
        "DestinationRule",
        "RequestAuthentication",
        "AuthorizationPolicy",
        "Telemetry",  # access logging, metrics and tracing at the waypoint (ztunnel ignores it)
        "ConfigMap",  # only istio-system/istio, the mesh config (tracing providers)
    }
)


def is_l7_object(obj: Any) -> bool:
    """Whether a waypoint needs ``obj``: an L7 kind (AuthorizationPolicy only with targetRefs)."""
    if obj.kind not in L7_KINDS:
        return False
    if obj.kind == "ConfigMap":
        # Imported here: the mesh config's schema brings YAML, which a node proxy that
        # only follows these objects over xDS does not otherwise load.
        from ambient.config.meshconfig import is_mesh_config

        return is_mesh_config(obj)
    if obj.kind == "AuthorizationPolicy":
        spec = getattr(obj, "spec", None)
        refs = (
            spec.get("targetRefs") or spec.get("targetRef") if isinstance(spec, Mapping) else None
        )
        return bool(refs)
    return True


def resource_name(ref: Ref) -> str:
    """The xDS name of an L7 object: ``Kind/namespace/name``."""
    return f"{ref.kind}/{ref.namespace}/{ref.name}"


def manifest_json(config: ConfigSet, ref: Ref) -> str | None:
    """The manifest of ``config``'s object ``ref`` as sent (None if not an L7 object or
    its document was not kept)."""
    obj = config.objects.get(ref)
    if obj is None or not is_l7_object(obj):
        return None
    origin = config.origins.get(ref)
    if origin is None or origin.source is None:
        return None
    return json.dumps(origin.source, sort_keys=True, separators=(",", ":"), default=str)


def waypoint_manifests(config: ConfigSet) -> dict[str, str]:
    """The L7 objects of ``config`` as (xDS name -> manifest JSON), from what was loaded."""
    out: dict[str, str] = {}
    for ref in config.objects:
        if ref.kind in L7_KINDS:
            text = manifest_json(config, ref)
            if text is not None:
                out[resource_name(ref)] = text
    return out


class L7Manifests:
    """The control plane's current L7 manifests, updated from what a change touched.

    ``update`` returns the names whose manifest changed (added, edited or gone);
    ``current`` is a new ``FrozenMap`` only when something did, so a snapshot can
    keep it by identity. An object is re-serialized only when it is a new object
    (objects are immutable: an unchanged one keeps its identity across reloads of
    the index, and an equal one re-read from a file serializes equal).
    """

    def __init__(self) -> None:
        self.current: FrozenMap[str, str] = FrozenMap()
        self._objects: dict[Ref, object] = {}

    def update(self, config: ConfigSet, changed: Iterable[Ref] | None) -> frozenset[str]:
        """Follow ``config``; ``changed``: the refs that may differ, or None for any."""
        refs: Iterable[Ref]
        if changed is None:
            refs = {r for r in config.objects if r.kind in L7_KINDS} | self._objects.keys()
        else:
            refs = {r for r in changed if r.kind in L7_KINDS}
        if not refs:
            return frozenset()
        manifests = dict(self.current.items())
        touched = set()
        for ref in refs:
            obj = config.objects.get(ref)
            if obj is not None and self._objects.get(ref) is obj:
                continue
            name = resource_name(ref)
            text = manifest_json(config, ref) if obj is not None else None
            if text is None:
                self._objects.pop(ref, None)
                if manifests.pop(name, None) is not None:
                    touched.add(name)
                continue
            self._objects[ref] = obj
            if manifests.get(name) != text:
                manifests[name] = text
                touched.add(name)
        if touched:
            self.current = FrozenMap(sorted(manifests.items()))
        return frozenset(touched)
