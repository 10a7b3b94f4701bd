"""Protocol detection tables and load-balancer picks (pure functions, no sockets)."""

from __future__ import annotations

import ipaddress
import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ambient.config.destinationrule import LoadBalancer
from ambient.frozen import FrozenMap
from ambient.state.proxy import ProxyState
from ambient.state.workload import Port, Service, TunnelProtocol, Workload, WorkloadStatus
from ambient.waypoint.model import Backend, HeaderOps
from ambient.waypoint.proxy.balancer import Balancer, Endpoint, endpoints_of
from ambient.waypoint.proxy.messages import strip_hop_by_hop
from ambient.waypoint.proxy.sniff import H2_PREFACE, Protocol, classify


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        (b"GET / HTTP/1.1\r\n", Protocol.HTTP1),
        (b"POST /api?x=1 HTTP/1.0\r\nhost: a\r\n", Protocol.HTTP1),
        (b"GET / HTTP/1.1\n", Protocol.HTTP1),
        (H2_PREFACE + b"\x00\x00", Protocol.HTTP2),
        (H2_PREFACE[:10], None),  # could still be the preface
        (b"GET /long/pa", None),  # an HTTP/1 request line in the making
        (b"GE", None),
        (b"\x16\x03\x01\x02\x00", Protocol.TCP),  # a TLS ClientHello
        (b"SSH-2.0-OpenSSH_9.2\r\n", Protocol.TCP),
        (b"GET / HTTP/2.0\r\n", Protocol.TCP),
        (b"GET  / HTTP/1.1\r\n", Protocol.TCP),
        (b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", Protocol.TCP),
        (b"A" * 40, Protocol.TCP),  # a method token longer than any HTTP method
    ],
)
def test_classify(prefix: bytes, expected: Protocol | None) -> None:
    assert classify(prefix) is expected


@given(st.binary(max_size=200))
def test_classify_never_fails_and_is_final(data: bytes) -> None:
    found = classify(data)
    if found is not None:  # more bytes never change a decision
        assert classify(data + b"more\r\n") is found


SVC = Service(
    "orders",
    "shop",
    "orders.shop.svc.cluster.local",
    (ipaddress.IPv4Address("10.0.0.1"),),
    (Port(80, 8080),),
)


def workload(name: str, ip: str, version: str, **kw: object) -> Workload:
    return Workload(
        uid=f"k//Pod/shop/{name}", name=name, namespace="shop",
        addresses=(ipaddress.IPv4Address(ip),), service_account="orders", node="n",
        tunnel_protocol=kw.get("protocol", TunnelProtocol.HBONE),  # type: ignore[arg-type]
        status=kw.get("status", WorkloadStatus.HEALTHY),  # type: ignore[arg-type]
        labels=FrozenMap({"version": version}),
        services=FrozenMap({SVC.key: (Port(80, 9090),)}),
    )  # fmt: skip


def test_endpoints_filter_health_mesh_subset_and_map_ports() -> None:
    state = ProxyState("n")
    state.apply(
        [
            SVC,
            workload("a", "10.1.0.1", "v1"),
            workload("b", "10.1.0.2", "v2"),
            workload("sick", "10.1.0.3", "v1", status=WorkloadStatus.UNHEALTHY),
            workload("plain", "10.1.0.4", "v1", protocol=TunnelProtocol.NONE),
        ],
        [],
    )
    all_ = endpoints_of(state, Backend("shop", SVC.hostname, 80))
    assert [(e.workload.name, e.port) for e in all_] == [("a", 9090), ("b", 9090)]
    v2 = Backend("shop", SVC.hostname, 80, "v2", FrozenMap({"version": "v2"}))
    assert [e.workload.name for e in endpoints_of(state, v2)] == ["b"]
    assert endpoints_of(state, Backend("shop", SVC.hostname, 81)) == []  # no such port
    assert endpoints_of(state, Backend("shop", "nope.shop.svc.cluster.local", 80)) == []


def endpoints(n: int) -> list[Endpoint]:
    return [
        Endpoint(
            workload(f"w{i}", f"10.2.0.{i + 1}", "v1"), ipaddress.IPv4Address(f"10.2.0.{i + 1}"), 80
        )
        for i in range(n)
    ]


def test_round_robin_rotates_per_backend() -> None:
    eps, balancer = endpoints(3), Balancer()
    backend = Backend("shop", SVC.hostname, 80)
    picks = [balancer.pick(backend, eps) for _ in range(6)]
    assert picks == eps + eps


def test_least_request_prefers_idle_endpoints() -> None:
    eps = endpoints(4)
    balancer = Balancer(random.Random(7))
    backend = Backend("shop", SVC.hostname, 80, load_balancer=LoadBalancer.LEAST_REQUEST)
    for _ in range(50):  # endpoint 0 is busy
        balancer.started(eps[0])
    picks = Counter(balancer.pick(backend, eps) for _ in range(600))
    # Power of two choices: the busy endpoint wins only when drawn twice, which never happens.
    assert picks[eps[0]] == 0
    assert all(150 <= picks[e] <= 250 for e in eps[1:]), picks
    for _ in range(50):
        balancer.finished(eps[0])
    assert balancer.in_flight == {}


def test_random_is_roughly_uniform() -> None:
    eps, balancer = endpoints(2), Balancer(random.Random(1))
    backend = Backend("shop", SVC.hostname, 80, load_balancer=LoadBalancer.RANDOM)
    picks = Counter(balancer.pick(backend, eps) for _ in range(1000))
    assert 400 <= picks[eps[0]] <= 600


@pytest.mark.parametrize(
    ("te", "kept"),
    [("trailers", True), ("gzip, Trailers", True), ("gzip", False), ("trailersx", False)],
)
def test_te_trailers_is_forwarded_and_nothing_else_of_te(te: str, kept: bool) -> None:
    """gRPC servers require ``te: trailers`` (HTTP/2 allows only that value, as Envoy keeps)."""
    out = strip_hop_by_hop((("te", te), ("x-kept", "yes")))
    assert out == ((("x-kept", "yes"), ("te", "trailers")) if kept else (("x-kept", "yes"),))


def test_hop_by_hop_fields_are_not_forwarded() -> None:
    headers = (
        ("connection", "keep-alive, x-private"),
        ("x-private", "1"),
        ("keep-alive", "timeout=5"),
        ("transfer-encoding", "chunked"),
        ("te", "gzip"),
        ("x-kept", "yes"),
    )
    assert strip_hop_by_hop(headers) == (("x-kept", "yes"),)
    assert HeaderOps(set=(("x-kept", "no"),)).apply(strip_hop_by_hop(headers)) == (
        ("x-kept", "no"),
    )


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["te", "connection", "x-a", "x-b", "keep-alive", ":path", "upgrade"]),
            st.sampled_from(["trailers", "x-a", "gzip", "1", "x-b, close", "TRAILERS"]),
        ),
        max_size=6,
    )
)
def test_the_quick_paths_of_strip_hop_by_hop_agree_with_the_rule(
    pairs: list[tuple[str, str]],
) -> None:
    """Whatever mix: what RFC 9110 7.6.1 keeps (the rule written out again, slowly)."""
    named = {t.strip().lower() for k, v in pairs if k == "connection" for t in v.split(",")}
    hop = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te",
           "trailer", "expect"}  # fmt: skip
    kept = [(k, v) for k, v in pairs if k not in hop and k not in named and not k.startswith(":")]
    if any(k == "te" and "trailers" in [t.strip().lower() for t in v.split(",")] for k, v in pairs):
        kept.append(("te", "trailers"))
    assert strip_hop_by_hop(tuple(pairs)) == tuple(kept)
