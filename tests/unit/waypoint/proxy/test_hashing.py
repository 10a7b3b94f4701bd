"""Consistent hashing: stable picks, ~1/n of the keys move when an endpoint goes, the
request's key as Envoy takes it, the generated cookie, and the DestinationRule schema."""

from __future__ import annotations

import ipaddress

import pytest

from ambient.config import ConfigError, load_text
from ambient.config.consistenthash import ConsistentHash, HashAlgorithm, HashCookie
from ambient.waypoint.model import Downstream, RequestHead
from ambient.waypoint.proxy.hashing import (
    HashTables,
    MaglevTable,
    Ring,
    hash64,
    request_affinity,
)
from tests.unit.config.test_l7_load_errors import DR
from tests.unit.waypoint.routing.helpers import request, router, target

ENDPOINTS = [f"10.244.0.{i}:8080" for i in range(1, 11)]
KEYS = [hash64(f"user-{i}".encode()) for i in range(4000)]
ALGORITHMS = [
    pytest.param(lambda ids: Ring(ids, 1024), id="ring-1024"),
    pytest.param(lambda ids: Ring(ids, 64), id="ring-64"),
    pytest.param(lambda ids: MaglevTable(ids, 65537), id="maglev-65537"),
    pytest.param(lambda ids: MaglevTable(ids, 1009), id="maglev-1009"),
]


@pytest.mark.parametrize("build", ALGORITHMS)
def test_same_key_same_endpoint_across_builds(build: object) -> None:
    first, second = build(ENDPOINTS), build(list(ENDPOINTS))  # type: ignore[operator]
    assert [first.lookup(k) for k in KEYS] == [second.lookup(k) for k in KEYS]


@pytest.mark.parametrize("build", ALGORITHMS)
def test_every_endpoint_gets_a_fair_share(build: object) -> None:
    table = build(ENDPOINTS)  # type: ignore[operator]
    counts = [0] * len(ENDPOINTS)
    for key in KEYS:
        counts[table.lookup(key)] += 1
    fair = len(KEYS) / len(ENDPOINTS)
    assert min(counts) > 0.4 * fair and max(counts) < 1.9 * fair, counts


@pytest.mark.parametrize("build", ALGORITHMS)
@pytest.mark.parametrize("removed", [0, 7])
def test_removing_an_endpoint_moves_about_one_nth_of_the_keys(build: object, removed: int) -> None:
    before = build(ENDPOINTS)  # type: ignore[operator]
    rest = [e for i, e in enumerate(ENDPOINTS) if i != removed]
    after = build(rest)  # type: ignore[operator]
    moved = 0
    for key in KEYS:
        old = ENDPOINTS[before.lookup(key)]
        new = rest[after.lookup(key)]
        moved += old != new
    share = moved / len(KEYS)
    # The removed endpoint's keys (~1/n = 10%) must move; little else may.
    assert 0.03 < share < 0.16, share
    kept = [k for k in KEYS if ENDPOINTS[before.lookup(k)] != ENDPOINTS[removed]]
    stayed = sum(1 for k in kept if rest[after.lookup(k)] == ENDPOINTS[before.lookup(k)])
    assert stayed / len(kept) > 0.97


def test_hash_tables_cache_and_pick_by_id() -> None:
    tables = HashTables()
    policy = ConsistentHash(header="x-user")
    picks = {tables.pick(policy, ENDPOINTS, ENDPOINTS, k) for k in KEYS[:200]}
    assert picks <= set(ENDPOINTS) and len(picks) > 5
    again = {tables.pick(policy, ENDPOINTS, ENDPOINTS, k) for k in KEYS[:200]}
    assert again == picks


CLIENT = Downstream(None, ipaddress.ip_address("10.244.0.7"), 41000)


def head(path: str = "/", *headers: tuple[str, str]) -> RequestHead:
    return RequestHead("GET", "orders", path, headers)


@pytest.mark.parametrize(
    ("policy", "request_head", "key"),
    [
        (ConsistentHash(header="x-user"), head("/", ("x-user", "alice")), b"alice"),
        (ConsistentHash(header="x-user"), head("/"), None),
        (ConsistentHash(source_ip=True), head("/"), b"10.244.0.7"),
        (ConsistentHash(query_parameter="u"), head("/p?a=1&u=bob&u=eve"), b"bob"),
        (ConsistentHash(query_parameter="u"), head("/p?a=1"), None),
        (
            ConsistentHash(cookie=HashCookie("sid")),
            head("/", ("cookie", 'a=1; sid="s-42"; b=2')),
            b"s-42",
        ),
        (ConsistentHash(cookie=HashCookie("sid")), head("/", ("cookie", "a=1")), None),
        (ConsistentHash(), head("/", ("x-user", "alice")), None),
    ],
)
def test_request_key(policy: ConsistentHash, request_head: RequestHead, key: bytes | None) -> None:
    affinity = request_affinity(policy, request_head, CLIENT, "10.96.0.1:8080")
    assert affinity.key == (hash64(key) if key is not None else None)
    assert affinity.set_cookie is None


@pytest.mark.parametrize(
    ("cookie", "expected"),
    [
        (HashCookie("sid", "/", 3600.0), 'sid="{v}"; Max-Age=3600; Path=/; HttpOnly'),
        (HashCookie("sid", "", 0.0), 'sid="{v}"; HttpOnly'),  # a session cookie
        (
            HashCookie("sid", "/app", 60.0, (("SameSite", "Strict"), ("Secure", ""))),
            'sid="{v}"; Max-Age=60; Path=/app; SameSite=Strict; Secure; HttpOnly',
        ),
    ],
)
def test_cookie_with_ttl_is_generated_as_envoy(cookie: HashCookie, expected: str) -> None:
    policy = ConsistentHash(cookie=cookie)
    affinity = request_affinity(policy, head("/"), CLIENT, "10.96.0.1:8080")
    value = f"{hash64(b'10.244.0.7:4100010.96.0.1:8080'):016x}"
    assert affinity.set_cookie == expected.format(v=value)
    assert affinity.key == hash64(value.encode())
    # The client sends it back: the same key, no new cookie.
    back = request_affinity(policy, head("/", ("cookie", f'sid="{value}"')), CLIENT, "x")
    assert back.key == affinity.key and back.set_cookie is None


DR_HASH = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: orders, namespace: shop}
spec:
  host: orders
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpCookie: {name: sid, ttl: 0s, path: /}, maglev: {tableSize: 1009}}
    portLevelSettings:
    - port: {number: 9090}
      loadBalancer: {simple: RANDOM}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      loadBalancer: {consistentHash: {httpHeaderName: X-User, ringHash: {minimumRingSize: 64}}}
"""


def test_destination_rule_consistent_hash_reaches_the_backend() -> None:
    vs = (
        "\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        "metadata: {name: orders, namespace: shop}\nspec:\n  hosts: [orders]\n  http:\n"
        "  - match: [{uri: {prefix: /v1}}]\n    route: [{destination: {host: orders, subset: v1}}]\n"
        "  - route: [{destination: {host: orders}}]\n"
    )
    table = router(DR_HASH + vs)
    plain = table.route(target("orders", 8080, "shop"), request("/")).backend
    assert plain is not None and plain.consistent_hash == ConsistentHash(
        cookie=HashCookie("sid", "/", 0.0), algorithm=HashAlgorithm.MAGLEV, size=1009
    )
    v1 = table.route(target("orders", 8080, "shop"), request("/v1")).backend
    assert v1 is not None and v1.consistent_hash == ConsistentHash(header="x-user", size=64)


@pytest.mark.parametrize(
    ("rest", "expected"),
    [
        (
            "trafficPolicy: {loadBalancer: {consistentHash: {maglev: {tableSize: 1000}}}}",
            "loadBalancer.consistentHash.maglev.tableSize: must be a prime number below 5000011, got 1000",
        ),
        (
            "trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: a, useSourceIp: true}}}",
            "loadBalancer.consistentHash: only one hash key may be set, got httpHeaderName, useSourceIp",
        ),
        (
            "trafficPolicy: {loadBalancer: {consistentHash: {ringHash: {}, maglev: {}}}}",
            "loadBalancer.consistentHash: only one of ringHash or maglev may be set",
        ),
        (
            "trafficPolicy: {loadBalancer: {simple: RANDOM, consistentHash: {useSourceIp: true}}}",
            "trafficPolicy.loadBalancer: only one of simple or consistentHash may be set",
        ),
        (
            "trafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {ttl: 1s}}}}",
            "consistentHash.httpCookie.name: missing required field",
        ),
        (
            "trafficPolicy: {outlierDetection: {consecutiveLocalOriginFailures: -1}}",
            "outlierDetection.consecutiveLocalOriginFailures: must be",
        ),
        (
            "trafficPolicy: {outlierDetection: {outlierDetectionHttpErrorCodes: [99]}}",
            "outlierDetection.outlierDetectionHttpErrorCodes[0]: must be between 100 and 599, got 99",
        ),
    ],
)
def test_bad_settings_are_refused_with_their_path(rest: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(DR.format(rest=rest), "dr.yaml")
    assert expected in str(caught.value), str(caught.value)


def test_local_origin_split_and_error_codes_reach_the_outlier_policy() -> None:
    rest = (
        "trafficPolicy: {outlierDetection: {splitExternalLocalOriginErrors: true, "
        "consecutiveLocalOriginFailures: 2, outlierDetectionHttpErrorCodes: [503, 429]}}"
    )
    table = router(DR.format(rest=rest).replace("name: bad", "name: orders"))
    backend = table.route(target("orders", 8080, "shop"), request("/")).backend
    assert backend is not None and backend.outlier is not None
    assert backend.outlier.split_local_origin and backend.outlier.consecutive_local_origin == 2
    assert backend.outlier.error_codes == {429, 503}
