"""Random Workload, Service and Authorization values survive encode, bytes and decode."""

from __future__ import annotations

import dataclasses
import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from ambient.authz.model import (
    Action,
    Authorization,
    Group,
    Match,
    MatchKind,
    Rules,
    Scope,
    ServiceAccountMatch,
    StringMatch,
)
from ambient.config.frozen import FrozenMap
from ambient.state.workload import (
    ApplicationTunnel,
    AppProtocol,
    GatewayAddress,
    LoadBalancingMode,
    Port,
    Service,
    TunnelProtocol,
    Workload,
    WorkloadStatus,
)
from ambient.xds.codec import (
    BY_NAME_SELECTOR,
    address_from_proto,
    authorization_from_proto,
    authorization_to_proto,
    service_to_proto,
    workload_to_proto,
)
from ambient.xds.proto import authorization_pb2, workload_pb2

# Any Unicode a protobuf string can hold (UTF-8: no lone surrogates).
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
names = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12)
ips = st.ip_addresses()
ports = st.builds(Port, st.integers(0, 65535), st.integers(0, 65535), st.sampled_from(AppProtocol))
port_lists = st.lists(ports, max_size=3).map(tuple)
gateways = st.builds(
    GatewayAddress,
    st.one_of(
        ips.map(str),
        st.builds(lambda ns, host: f"{ns}/{host}", names.filter(lambda s: "/" not in s), names),
    ),
    st.integers(0, 65535),
)
string_maps = st.dictionaries(text, text, max_size=3).map(FrozenMap)

workloads = st.builds(
    Workload,
    uid=text,
    name=text,
    namespace=text,
    addresses=st.lists(ips, max_size=3).map(tuple),
    service_account=names,  # empty means "default" on Istio's wire
    node=text,
    tunnel_protocol=st.sampled_from(TunnelProtocol),
    trust_domain=names,  # empty means cluster.local on Istio's wire
    cluster_id=text,
    network=text,
    workload_name=text,
    workload_type=st.one_of(st.sampled_from(["deployment", "pod", "workloadentry"]), text),
    canonical_name=text,
    canonical_revision=text,
    services=st.dictionaries(text, port_lists, max_size=3).map(FrozenMap),
    waypoint=st.one_of(st.none(), gateways),
    status=st.sampled_from(WorkloadStatus),
    labels=string_maps,
    authorization_policies=st.lists(text, max_size=3).map(tuple),
    local=st.booleans(),
    application_tunnel=st.sampled_from(ApplicationTunnel),
)

services = st.builds(
    Service,
    name=text,
    namespace=text,
    hostname=text,
    addresses=st.lists(ips, max_size=3).map(tuple),
    ports=port_lists,
    subject_alt_names=st.lists(text, max_size=3).map(tuple),
    waypoint=st.one_of(st.none(), gateways),
    load_balancing=st.sampled_from(LoadBalancingMode),
)


@st.composite
def string_matches(draw: st.DrawFn) -> StringMatch:
    kind = draw(st.sampled_from(MatchKind))
    return StringMatch(kind) if kind is MatchKind.PRESENCE else StringMatch(kind, draw(names))


networks = st.one_of(
    st.builds(
        lambda a, n: ipaddress.ip_network((a, n), strict=False),
        st.ip_addresses(v=4),
        st.integers(0, 32),
    ),
    st.builds(
        lambda a, n: ipaddress.ip_network((a, n), strict=False),
        st.ip_addresses(v=6),
        st.integers(0, 128),
    ),
)
SMALL = 2
matches = st.builds(
    Match,
    namespaces=st.lists(string_matches(), max_size=SMALL).map(tuple),
    not_namespaces=st.lists(string_matches(), max_size=SMALL).map(tuple),
    service_accounts=st.lists(st.builds(ServiceAccountMatch, text, text), max_size=SMALL).map(
        tuple
    ),
    not_service_accounts=st.lists(st.builds(ServiceAccountMatch, text, text), max_size=SMALL).map(
        tuple
    ),
    principals=st.lists(string_matches(), max_size=SMALL).map(tuple),
    not_principals=st.lists(string_matches(), max_size=SMALL).map(tuple),
    source_ips=st.lists(networks, max_size=SMALL).map(tuple),
    not_source_ips=st.lists(networks, max_size=SMALL).map(tuple),
    destination_ips=st.lists(networks, max_size=SMALL).map(tuple),
    not_destination_ips=st.lists(networks, max_size=SMALL).map(tuple),
    destination_ports=st.lists(st.integers(0, 65535), max_size=SMALL).map(tuple),
    not_destination_ports=st.lists(st.integers(0, 65535), max_size=SMALL).map(tuple),
)
groups = st.lists(st.lists(matches, max_size=2).map(lambda ms: Rules(tuple(ms))), max_size=2).map(
    lambda rs: Group(tuple(rs))
)
selectors = st.one_of(
    st.just(BY_NAME_SELECTOR),
    st.dictionaries(text, text, max_size=3).map(lambda d: tuple(sorted(d.items()))),
)


@st.composite
def authorizations(draw: st.DrawFn) -> Authorization:
    scope = draw(st.sampled_from(Scope))
    return Authorization(
        name=draw(names),
        namespace=draw(names),
        scope=scope,
        action=draw(st.sampled_from(Action)),
        groups=tuple(draw(st.lists(groups, max_size=3))),
        dry_run=draw(st.booleans()),
        selector=draw(selectors) if scope is Scope.WORKLOAD_SELECTOR else None,
    )


@given(workloads)
def test_random_workloads_roundtrip(workload: Workload) -> None:
    wire = workload_to_proto(workload).SerializeToString()
    assert address_from_proto(workload_pb2.Address.FromString(wire)) == workload


@given(services)
def test_random_services_roundtrip(service: Service) -> None:
    wire = service_to_proto(service).SerializeToString()
    assert address_from_proto(workload_pb2.Address.FromString(wire)) == service


@given(authorizations())
def test_random_authorizations_roundtrip(policy: Authorization) -> None:
    wire = authorization_to_proto(policy).SerializeToString()
    assert authorization_from_proto(authorization_pb2.Authorization.FromString(wire)) == policy


@given(workloads)
def test_encoding_is_deterministic(workload: Workload) -> None:
    # xDS versions are hashes of resources: equal values must give equal bytes, whatever
    # the order of their mappings.
    again = dataclasses.replace(
        workload,
        labels=FrozenMap(reversed(list(workload.labels.items()))),
        services=FrozenMap(reversed(list(workload.services.items()))),
    )
    assert again == workload
    a = workload_to_proto(workload).SerializeToString(deterministic=True)
    b = workload_to_proto(again).SerializeToString(deterministic=True)
    assert a == b
