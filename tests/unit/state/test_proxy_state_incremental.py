"""ProxyState.apply updates its indexes incrementally: after any sequence of pushes they
equal the indexes built from scratch for the same workloads and services (hypothesis).

Addresses, hostnames and service keys are drawn from tiny sets so that resources
collide (two workloads on one IP, two services on one VIP or hostname, workloads
naming services that come later or went away) — the cases an incremental index gets
wrong first.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambient.frozen import FrozenMap
from ambient.state.proxy import ProxyState
from ambient.state.workload import Port, Service, TunnelProtocol, Workload, WorkloadStatus

# A ServiceEntry host may be declared in two namespaces: two keys, one hostname.
NAMESPACES = ["shop", "other"]
HOSTS = ["a.example.com", "b.example.com"]
SERVICE_KEYS = [f"{ns}/{host}" for ns in NAMESPACES for host in HOSTS]
IPS = [ipaddress.IPv4Address(f"127.10.0.{i}") for i in range(1, 4)]
VIPS = [ipaddress.IPv4Address(f"127.20.0.{i}") for i in range(1, 3)]

workloads = st.builds(
    lambda i, ips, keys, healthy: Workload(
        uid=f"Kubernetes//Pod/shop/p{i}",
        name=f"p{i}",
        namespace="shop",
        addresses=tuple(ips),
        service_account="sa",
        node="node-1",
        tunnel_protocol=TunnelProtocol.HBONE,
        status=WorkloadStatus.HEALTHY if healthy else WorkloadStatus.UNHEALTHY,
        services=FrozenMap({k: (Port(80, 8080),) for k in keys}),
    ),
    st.integers(0, 4),
    st.lists(st.sampled_from(IPS), max_size=2, unique=True),
    st.lists(st.sampled_from(SERVICE_KEYS), max_size=3, unique=True),
    st.booleans(),
)
services = st.builds(
    lambda namespace, host, vips, port: Service(
        name=host.partition(".")[0],
        namespace=namespace,
        hostname=host,
        addresses=tuple(vips),
        ports=(Port(port, 8080),),
    ),
    st.sampled_from(NAMESPACES),
    st.sampled_from(HOSTS),
    st.lists(st.sampled_from(VIPS), max_size=2, unique=True),
    st.sampled_from([80, 81]),
)
names = st.sampled_from([f"Kubernetes//Pod/shop/p{i}" for i in range(5)] + SERVICE_KEYS)
pushes = st.lists(
    st.tuples(st.lists(st.one_of(workloads, services), max_size=4), st.lists(names, max_size=3)),
    min_size=1,
    max_size=8,
)


def indexes(state: ProxyState) -> tuple[object, ...]:
    return (
        dict(state._by_ip),
        dict(state._by_vip),
        dict(state._by_host),
        {k: list(v) for k, v in state._endpoints.items()},
    )


@settings(max_examples=300, deadline=None)
@given(pushes)
def test_incremental_indexes_equal_a_rebuild(
    sequence: list[tuple[list[Workload | Service], list[str]]],
) -> None:
    state = ProxyState("node-1")
    for upserted, removed in sequence:
        state.apply(upserted, removed)
        reference = ProxyState("node-1")
        reference._rebuild(dict(state.workloads), dict(state.services))
        assert indexes(state) == indexes(reference)


def bare_pod(i: int, address: ipaddress.IPv4Address) -> Workload:
    return Workload(
        uid=f"Kubernetes//Pod/shop/p{i}",
        name=f"p{i}",
        namespace="shop",
        addresses=(address,),
        service_account="sa",
        node="node-1",
        tunnel_protocol=TunnelProtocol.HBONE,
    )


def test_a_reader_keeps_the_previous_dicts() -> None:
    state = ProxyState("node-1")
    first = bare_pod(1, IPS[0])
    state.apply([first], [])
    before = state.workloads
    state.apply([], [first.uid])
    assert before == {first.uid: first}  # the subscription diffs old against new
    assert state.workloads == {}
    assert state.workload_by_ip(IPS[0]) is None


def test_a_failing_push_leaves_the_state_as_it_was() -> None:
    state = ProxyState("node-1")
    pod = bare_pod(1, IPS[0])
    state.apply([pod], [])

    def broken() -> object:
        yield bare_pod(2, IPS[1])
        raise RuntimeError("decoder bug")

    with pytest.raises(RuntimeError):
        state.apply(broken(), [])  # type: ignore[arg-type]
    assert state.workloads == {pod.uid: pod}
    assert state.workload_by_ip(IPS[0]) is pod
    assert state.workload_by_ip(IPS[1]) is None
