"""Gateway and route status as the controller computes it, and the waypoint's objects."""

from __future__ import annotations

from typing import Any

from ambient.cli.waypoint import waypoint_manifest
from ambient.config.gateway import Gateway
from ambient.kube.cache import ClusterCache, Entry
from ambient.kube.kinds import by_kind
from ambient.kube.status import CONTROLLER_NAME, covers, gateway_status, route_status
from ambient.kube.waypoints import waypoint_objects


def _store(cache: ClusterCache, body: dict[str, Any], status: Any = None) -> Entry:
    meta = body.setdefault("metadata", {})
    meta.setdefault("uid", f"uid-{meta['name']}")
    meta.setdefault("generation", 3)
    if status is not None:
        body["status"] = status
    entry, _ = cache.upsert(by_kind(body["kind"]), body)
    return entry


def _cache() -> ClusterCache:
    return ClusterCache(indexed=frozenset({"Gateway", "HTTPRoute", "Service", "Namespace"}))


def _service(
    name: str, ns: str = "shop", ip: str = "10.96.0.9", labels: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
        "spec": {
            "clusterIP": ip,
            "ports": [{"name": "http", "port": 80}],
            "selector": {"app": name},
        },
    }


def test_a_waypoint_is_programmed_only_with_an_address_and_a_ready_pod() -> None:
    cache = _cache()
    gateway = _store(cache, waypoint_manifest("shop", "waypoint", "service"))
    missing = gateway_status(gateway, None, 1, {})
    assert missing is not None
    programmed = {c["type"]: c for c in missing["conditions"]}["Programmed"]
    assert (programmed["status"], programmed["reason"]) == ("False", "AddressNotUsable")
    service = _store(cache, _service("waypoint"))
    waiting = gateway_status(gateway, service, 0, {})
    assert {c["type"]: c for c in waiting["conditions"]}["Programmed"]["reason"] == "NoResources"  # type: ignore[index]
    ready = gateway_status(gateway, service, 1, {"mesh": 2})
    assert ready is not None
    conditions = {c["type"]: c for c in ready["conditions"]}
    assert conditions["Programmed"]["status"] == "True"
    assert conditions["Programmed"]["message"] == (
        "Resource programmed, assigned to service(s) waypoint.shop.svc.cluster.local:15008"
    )
    assert conditions["Accepted"]["observedGeneration"] == 3
    assert ready["addresses"] == [{"type": "IPAddress", "value": "10.96.0.9"}]
    assert [(item["name"], item["attachedRoutes"]) for item in ready["listeners"]] == [("mesh", 2)]
    ingress = _store(
        cache,
        {
            **waypoint_manifest("shop", "ingress", "service"),
            "spec": {
                "gatewayClassName": "istio",
                "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}],
            },
        },
    )
    assert gateway_status(ingress, None, 0, {}) is None  # not ours


def test_last_transition_time_moves_only_with_the_status() -> None:
    cache = _cache()
    gateway = _store(cache, waypoint_manifest("shop", "waypoint", "service"))
    first = gateway_status(gateway, None, 0, {})
    assert first is not None
    old = {
        **first,
        "conditions": [
            {**c, "lastTransitionTime": "2020-01-01T00:00:00Z"} for c in first["conditions"]
        ],
    }
    gateway = _store(cache, waypoint_manifest("shop", "waypoint", "service"), status=old)
    service = _store(cache, _service("waypoint"))
    again = gateway_status(gateway, service, 0, {})  # Programmed still False (another reason)
    assert again is not None
    times = {c["type"]: c["lastTransitionTime"] for c in again["conditions"]}
    assert times["Accepted"] == times["Programmed"] == "2020-01-01T00:00:00Z"
    flipped = gateway_status(gateway, service, 1, {})
    assert flipped is not None
    assert {c["type"]: c["lastTransitionTime"] for c in flipped["conditions"]}[
        "Programmed"
    ] != "2020-01-01T00:00:00Z"


def _route(
    parents: list[dict[str, Any]], backend: str, status: Any = None, **extra: Any
) -> dict[str, Any]:
    spec = {
        "parentRefs": parents,
        "rules": [{"backendRefs": [{"name": backend, "port": 80}], **extra}],
    }
    body = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "r", "namespace": "shop"},
        "spec": spec,
    }
    if status is not None:
        body["status"] = status
    return body


def test_route_parents_keep_other_controllers_entries() -> None:
    cache = _cache()
    _store(cache, _service("api", labels={"istio.io/use-waypoint": "waypoint"}))
    other = {
        "parentRef": {"name": "ingress"},
        "controllerName": "example.com/other",
        "conditions": [],
    }
    stale = {
        "parentRef": {"group": "", "kind": "Service", "name": "old"},
        "controllerName": CONTROLLER_NAME,
        "conditions": [],
    }
    entry = _store(
        cache,
        _route(
            [{"group": "", "kind": "Service", "name": "api"}, {"name": "ingress"}],
            "api",
            {"parents": [other, stale]},
        ),
    )
    status = route_status(entry, cache)
    assert status is not None
    parents = status["parents"]
    assert parents[0] == other  # kept as it was
    assert [p["parentRef"]["name"] for p in parents] == ["ingress", "api"]  # ours: old removed
    conditions = {c["type"]: c for c in parents[1]["conditions"]}
    assert conditions["Accepted"]["status"] == "True"
    assert conditions["ResolvedWaypoints"]["message"] == "All waypoints resolved"


def test_an_invalid_route_is_not_accepted() -> None:
    cache = _cache()
    _store(cache, _service("api"))
    bad = {"matches": [{"path": {"type": "RegularExpression", "value": "(("}}]}
    entry = _store(cache, _route([{"group": "", "kind": "Service", "name": "api"}], "api", **bad))
    status = route_status(entry, cache)
    assert status is not None
    accepted = {c["type"]: c for c in status["parents"][0]["conditions"]}["Accepted"]
    assert (accepted["status"], accepted["reason"]) == ("False", "UnsupportedValue")
    assert accepted["message"].startswith("spec.rules[0].matches[0].path.value: invalid regex")


def test_covers_ignores_transition_times_and_others_conditions() -> None:
    desired = {
        "conditions": [{"type": "Accepted", "status": "True", "lastTransitionTime": "b"}],
        "addresses": [],
    }
    observed = {
        "conditions": [
            {"type": "Other", "status": "False"},
            {"type": "Accepted", "status": "True", "lastTransitionTime": "a"},
        ],
        "addresses": [],
    }
    assert covers(observed, desired)
    assert not covers({**observed, "addresses": [{"value": "x"}]}, desired)
    assert not covers(None, desired)


def test_waypoint_objects_are_owned_and_labelled() -> None:
    cache = _cache()
    manifest = waypoint_manifest("shop", "wp", "service")
    manifest["spec"]["infrastructure"] = {"labels": {"team": "a"}, "annotations": {"note": "n"}}
    entry = _store(cache, manifest)
    assert isinstance(entry.converted.obj, Gateway)  # type: ignore[union-attr]
    account, deployment, service = waypoint_objects(entry.converted.obj, "uid-wp")  # type: ignore[union-attr]
    owner = [
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "name": "wp",
            "uid": "uid-wp",
        }
    ]
    assert (
        account["metadata"]["ownerReferences"] == deployment["metadata"]["ownerReferences"] == owner
    )
    assert service["metadata"]["ownerReferences"] == owner
    assert deployment["metadata"]["labels"]["team"] == "a"
    assert deployment["metadata"]["annotations"] == {"note": "n"}
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    # Scraped as Istio's waypoint pods are (Prometheus's pod discovery)
    assert deployment["spec"]["template"]["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "15020",
        "prometheus.io/path": "/stats/prometheus",
        "note": "n",
    }
    assert labels["gateway.networking.k8s.io/gateway-name"] == "wp"
    assert labels["istio.io/dataplane-mode"] == "none"
    assert "replicas" not in deployment["spec"]
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [
        ("status-port", 15021),
        ("mesh", 15008),
    ]
