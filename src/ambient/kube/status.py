"""The status the controller writes, as istiod writes it (``pilot/pkg/config/kube/gateway``).

**Waypoint Gateways** (class ``istio-waypoint``; other classes are not ours):

- ``Accepted``: True (``Accepted``, "Resource accepted"); False when the Gateway fails
  the mesh's validation (``ListenersNotValid`` for a listener problem, else
  ``Invalid``), with the problem as message.
- ``Programmed``: True (``Programmed``, "Resource programmed, assigned to service(s)
  <gw>.<ns>.svc.cluster.local:15008") once the waypoint's Service has an address and
  at least one of its pods is a ready workload; False ``AddressNotUsable`` while the
  Service does not exist (istiod's message), False ``NoResources`` while no pod is
  ready (this mesh's rule, as in the folder mode: istiod only checks the Service,
  with a TODO about the Deployment).
- ``ResolvedRefs``: True. ``addresses``: the Service's cluster IP. One listener status
  per listener (``Accepted``, ``Conflicted`` False, ``Programmed``, ``ResolvedRefs``),
  ``attachedRoutes`` counting the accepted routes that name the Gateway.

**Routes** (HTTPRoute, GRPCRoute): one ``parents`` entry, ``controllerName:
istio.io/gateway-controller``, per parentRef that is ours: a Service or ServiceEntry
(a mesh route), or a waypoint Gateway. ``Accepted``: True ("Route was valid"), False
``NoMatchingParent`` when the Service/ServiceEntry does not exist (``parent service:
"x" not found``), False ``UnsupportedValue`` when the route fails the mesh's
validation. ``ResolvedRefs``: True, or False ``BackendNotFound`` naming the first
missing backend (``backend(x.ns.svc.cluster.local) not found``), ``InvalidKind`` for
a backend kind other than Service/ServiceEntry. ``ResolvedWaypoints`` (istiod with
ambient): True, with "All waypoints resolved" or why a Service parent has no
waypoint (its message; istiod keeps the status True). Entries of other controllers
are kept as they are; ours that no longer apply are removed. ReferenceGrants are not
read, so a cross-namespace backend is not checked for permission.

Conditions carry ``observedGeneration``; ``lastTransitionTime`` changes only when the
condition's status does. ``covers`` says whether an observed status already has what
we would write, so status is written only when it changes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from ambient.config.gateway import WAYPOINT_CLASS
from ambient.config.resources import LABEL_USE_WAYPOINT
from ambient.config.schema import render_path
from ambient.kube.cache import ClusterCache, Entry

__all__ = ["CONTROLLER_NAME", "covers", "gateway_status", "route_parents", "route_status"]

CONTROLLER_NAME = "istio.io/gateway-controller"
_GATEWAY_GROUP = "gateway.networking.k8s.io"
_ISTIO_GROUP = "networking.istio.io"
_KEYED = {"conditions": "type", "listeners": "name"}
_MISSING_LABEL = (
    "istio.io/use-waypoint label missing from parent and parent namespace; "
    "in ambient mode, route will not be respected"
)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _condition(
    kind: str,
    ok: bool,
    reason: str,
    message: str,
    generation: int | None,
    previous: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    status = "True" if ok else "False"
    if kind == "Conflicted":
        status = "False" if ok else "True"
    before = next((c for c in previous if c.get("type") == kind), None)
    when = before.get("lastTransitionTime") if before and before.get("status") == status else None
    out = {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": when or _now(),
    }
    if generation is not None:
        out["observedGeneration"] = generation
    return out


def _first_error(entry: Entry) -> tuple[str, str] | None:
    """(field path, message) of the first problem the mesh's validation found."""
    if entry.converted is None or not entry.converted.errors:
        return None
    issue = entry.converted.errors[0]
    return render_path(issue.path), issue.message


def gateway_status(
    entry: Entry, service: Entry | None, ready_pods: int, attached: Mapping[str, int]
) -> dict[str, Any] | None:
    """The status of waypoint Gateway ``entry``; None if it is not a waypoint."""
    spec = entry.view.get("spec") or {}
    if spec.get("gatewayClassName") != WAYPOINT_CLASS:
        return None
    generation = entry.generation
    previous = (entry.status or {}).get("conditions") or []
    host = f"{entry.name}.{entry.namespace}.svc.cluster.local"
    problem = _first_error(entry)
    if problem is not None:
        path, message = problem
        reason = "ListenersNotValid" if path.startswith("spec.listeners") else "Invalid"
        accepted = _condition("Accepted", False, reason, f"{path}: {message}", generation, previous)
    else:
        accepted = _condition(
            "Accepted", True, "Accepted", "Resource accepted", generation, previous
        )
    address = ((service.view.get("spec") or {}).get("clusterIP") if service else None) or ""
    if address == "None":
        address = ""
    if not address:
        programmed = _condition(
            "Programmed",
            False,
            "AddressNotUsable",
            f'Failed to assign to any requested addresses: hostname "{host}" not found',
            generation,
            previous,
        )
    elif not ready_pods or problem is not None:
        programmed = _condition(
            "Programmed",
            False,
            "NoResources",
            "waiting for a ready waypoint replica",
            generation,
            previous,
        )
    else:
        programmed = _condition(
            "Programmed",
            True,
            "Programmed",
            f"Resource programmed, assigned to service(s) {host}:15008",
            generation,
            previous,
        )
    resolved = _condition(
        "ResolvedRefs", True, "ResolvedRefs", "All references resolved", generation, previous
    )
    listeners = []
    before_listeners = {
        item.get("name"): item.get("conditions") or []
        for item in (entry.status or {}).get("listeners") or []
    }
    for listener in spec.get("listeners") or []:
        name = listener.get("name")
        old = before_listeners.get(name, [])
        listeners.append(
            {
                "name": name,
                "attachedRoutes": attached.get(name, 0),
                "supportedKinds": [
                    {"group": _GATEWAY_GROUP, "kind": "HTTPRoute"},
                    {"group": _GATEWAY_GROUP, "kind": "GRPCRoute"},
                ],
                "conditions": [
                    _condition(
                        "Accepted", problem is None, "Accepted", "No errors found", generation, old
                    ),
                    _condition(
                        "Conflicted", True, "NoConflicts", "No errors found", generation, old
                    ),
                    _condition(
                        "Programmed", True, "Programmed", "No errors found", generation, old
                    ),
                    _condition(
                        "ResolvedRefs", True, "ResolvedRefs", "No errors found", generation, old
                    ),
                ],
            }
        )
    return {
        "conditions": [accepted, programmed, resolved],
        "addresses": [{"type": "IPAddress", "value": address}] if address else [],
        "listeners": listeners,
    }


# -- routes ------------------------------------------------------------------------------


def _parent_key(ref: Mapping[str, Any], namespace: str) -> tuple[str, str, str, str, str, str]:
    return (
        ref.get("group", _GATEWAY_GROUP) or "",
        ref.get("kind", "Gateway"),
        ref.get("namespace") or namespace,
        ref.get("name", ""),
        str(ref.get("sectionName", "")),
        str(ref.get("port", "")),
    )


def _labels(entry: Entry | None) -> Mapping[str, str]:
    return (entry.view.get("metadata") or {}).get("labels") or {} if entry else {}


def route_parents(
    entry: Entry, cache: ClusterCache
) -> list[tuple[Mapping[str, Any], Entry | None, str]]:
    """The parentRefs of route ``entry`` that are ours: (ref, the parent if found, its kind)."""
    spec = entry.view.get("spec") or {}
    out = []
    for ref in spec.get("parentRefs") or []:
        group, kind, ns, name, _, _ = _parent_key(ref, entry.namespace)
        if kind == "Service" and group in ("", "core"):
            out.append((ref, cache.get("Service", ns, name), "Service"))
        elif kind == "ServiceEntry" and group == _ISTIO_GROUP:
            out.append((ref, cache.get("ServiceEntry", ns, name), "ServiceEntry"))
        elif kind == "Gateway" and group == _GATEWAY_GROUP:
            gateway = cache.get("Gateway", ns, name)
            if (
                gateway is not None
                and (gateway.view.get("spec") or {}).get("gatewayClassName") == WAYPOINT_CLASS
            ):
                out.append((ref, gateway, "Gateway"))
    return out


def _backend_problem(entry: Entry, cache: ClusterCache) -> tuple[str, str] | None:
    for rule in (entry.view.get("spec") or {}).get("rules") or []:
        for backend in rule.get("backendRefs") or []:
            group, kind = backend.get("group", ""), backend.get("kind", "Service")
            ns, name = backend.get("namespace") or entry.namespace, backend.get("name", "")
            if kind == "Service" and group in ("", "core"):
                if cache.get("Service", ns, name) is None:
                    return "BackendNotFound", f"backend({name}.{ns}.svc.cluster.local) not found"
            elif kind == "ServiceEntry" and group == _ISTIO_GROUP:
                if cache.get("ServiceEntry", ns, name) is None:
                    return "BackendNotFound", f"backend({name}) not found"
            else:
                return (
                    "InvalidKind",
                    f"referencing unsupported backendRef: group {group!r} kind {kind!r}",
                )
    return None


def route_status(entry: Entry, cache: ClusterCache) -> dict[str, Any] | None:
    """The status of route ``entry`` (None: it names no parent of ours and has no entry of
    ours to remove)."""
    observed = (entry.status or {}).get("parents") or []
    parents = route_parents(entry, cache)
    if not parents and not any(p.get("controllerName") == CONTROLLER_NAME for p in observed):
        return None
    generation = entry.generation
    problem = _first_error(entry)
    backend = _backend_problem(entry, cache)
    ours = []
    for ref, parent, kind in parents:
        key = _parent_key(ref, entry.namespace)
        before = next(
            (
                p.get("conditions") or []
                for p in observed
                if p.get("controllerName") == CONTROLLER_NAME
                and _parent_key(p.get("parentRef") or {}, entry.namespace) == key
            ),
            [],
        )
        waypoint_message = "All waypoints resolved"
        if problem is not None:  # an invalid route is used nowhere, whatever its parents
            accepted = _condition(
                "Accepted",
                False,
                "UnsupportedValue",
                f"{problem[0]}: {problem[1]}",
                generation,
                before,
            )
        elif parent is None:
            what = {"Service": "service", "ServiceEntry": "service entry"}.get(kind, "gateway")
            accepted = _condition(
                "Accepted",
                False,
                "NoMatchingParent",
                f'parent {what}: "{key[3]}" not found',
                generation,
                before,
            )
        else:
            accepted = _condition(
                "Accepted", True, "Accepted", "Route was valid", generation, before
            )
        if parent is None:
            waypoint_message = "parent not found"
        if parent is not None and kind != "Gateway" and LABEL_USE_WAYPOINT not in _labels(parent):
            namespace = cache.get("Namespace", "", parent.namespace)
            if LABEL_USE_WAYPOINT not in _labels(namespace):
                waypoint_message = _MISSING_LABEL
        if backend is None:
            refs = _condition(
                "ResolvedRefs", True, "ResolvedRefs", "All references resolved", generation, before
            )
        else:
            refs = _condition("ResolvedRefs", False, backend[0], backend[1], generation, before)
        waypoints = _condition(
            "ResolvedWaypoints", True, "ResolvedWaypoints", waypoint_message, generation, before
        )
        ours.append(
            {
                "parentRef": dict(ref),
                "controllerName": CONTROLLER_NAME,
                "conditions": [accepted, refs, waypoints],
            }
        )
    others = [p for p in observed if p.get("controllerName") != CONTROLLER_NAME]
    return {"parents": [*others, *ours]}


def attached_routes(
    cache: ClusterCache, kinds: Sequence[str]
) -> dict[tuple[str, str], dict[str, int]]:
    """Per waypoint Gateway (namespace, name): listener name -> accepted routes naming it
    (a parentRef without sectionName counts for every listener)."""
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for kind in kinds:
        for route in cache.entries(kind):
            if _first_error(route) is not None:
                continue
            for ref, parent, parent_kind in route_parents(route, cache):
                if parent_kind != "Gateway" or parent is None:
                    continue
                listeners = [
                    str(item.get("name"))
                    for item in (parent.view.get("spec") or {}).get("listeners") or []
                ]
                section = ref.get("sectionName")
                per = counts.setdefault((parent.namespace, parent.name), {})
                for name in listeners if not section else [section]:
                    per[name] = per.get(name, 0) + 1
    return counts


# -- comparing -------------------------------------------------------------------------


def covers(observed: Any, desired: Any, field: str = "") -> bool:
    """Whether ``observed`` already has everything ``desired`` sets (``lastTransitionTime``
    aside; keyed lists compared by key, extra items of others ignored)."""
    if isinstance(desired, Mapping):
        if not isinstance(observed, Mapping):
            return False
        return all(
            key == "lastTransitionTime" or covers(observed.get(key), value, key)
            for key, value in desired.items()
        )
    if isinstance(desired, list):
        if not isinstance(observed, list):
            return False
        key = _KEYED.get(field)
        if key is not None:
            found = {item.get(key): item for item in observed if isinstance(item, Mapping)}
            return all(covers(found.get(item.get(key)), item) for item in desired)
        return len(observed) == len(desired) and all(
            covers(o, d) for o, d in zip(observed, desired, strict=True)
        )
    return bool(observed == desired)
