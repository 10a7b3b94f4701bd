"""The codec: every field of Workload, Service and Authorization survives the wire.

Each table row changes one field of a fully set value, encodes it, serializes and
parses the bytes, decodes, and expects the same value back. Coverage tests make sure
a field added to a model later must get a row. Then the decisions: where a value goes
on Istio's wire, what a foreign (istiod-made) message decodes to, and what is refused.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

import pytest
from google.protobuf import any_pb2

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
    AUTHORIZATION_EXTENSION,
    BY_NAME_SELECTOR,
    WORKLOAD_EXTENSION,
    DecodeError,
    address_from_proto,
    authorization_from_proto,
    authorization_to_proto,
    service_to_proto,
    workload_to_proto,
)
from ambient.xds.proto import authorization_pb2 as authz_pb
from ambient.xds.proto import workload_pb2 as wl_pb

ip = ipaddress.ip_address
net = ipaddress.ip_network

BASE_WORKLOAD = Workload(
    uid="Kubernetes//Pod/shop/web-1",
    name="web-1",
    namespace="shop",
    addresses=(ip("10.0.0.5"),),
    service_account="web",
    node="node-1",
    tunnel_protocol=TunnelProtocol.HBONE,
    trust_domain="cluster.local",
    cluster_id="Kubernetes",
    network="",
    workload_name="web",
    workload_type="deployment",
    canonical_name="web",
    canonical_revision="v1",
    services=FrozenMap({"shop/web.shop.svc.cluster.local": (Port(80, 8080),)}),
    waypoint=None,
    status=WorkloadStatus.HEALTHY,
    labels=FrozenMap({"app": "web", "version": "v1"}),
    authorization_policies=("shop/allow-web",),
    local=True,
    application_tunnel=ApplicationTunnel.NONE,
)

WORKLOAD_ROWS: list[tuple[str, Any]] = [
    ("uid", "Kubernetes//WorkloadEntry/shop/vm-1"),
    ("uid", ""),
    ("name", "web-2"),
    ("namespace", "other"),
    ("addresses", ()),
    ("addresses", (ip("10.0.0.5"), ip("fd00::5"))),
    ("addresses", (ip("::ffff:10.0.0.5"),)),  # IPv4-mapped stays IPv6 (16 bytes)
    ("service_account", "orders"),
    ("node", ""),
    ("node", "node-2"),
    ("tunnel_protocol", TunnelProtocol.NONE),
    ("trust_domain", "example.org"),
    ("cluster_id", ""),
    ("cluster_id", "east"),
    ("network", "net-1"),
    ("workload_name", ""),
    ("workload_type", "pod"),
    ("workload_type", "cronjob"),
    ("workload_type", "job"),
    ("workload_type", "workloadentry"),  # no Istio enum value: POD plus the extension
    ("workload_type", ""),
    ("canonical_name", ""),
    ("canonical_revision", "latest"),
    ("services", FrozenMap()),
    ("services", FrozenMap({"shop/a.shop.svc.cluster.local": ()})),  # endpoint, no ports
    (
        "services",
        FrozenMap(
            {
                "shop/a.shop.svc.cluster.local": (Port(80, 0), Port(443, 8443)),
                "other/b.other.svc.cluster.local": (Port(9090, 9090),),
            }
        ),
    ),
    ("waypoint", GatewayAddress("shop/waypoint.shop.svc.cluster.local")),
    ("waypoint", GatewayAddress("shop/waypoint.shop.svc.cluster.local", 0)),
    ("waypoint", GatewayAddress("10.0.0.9", 15008)),
    ("waypoint", GatewayAddress("fd00::9", 15009)),
    ("status", WorkloadStatus.UNHEALTHY),
    ("labels", FrozenMap()),
    ("labels", FrozenMap({"app": "web", "": "", "k8s.io/x": "é"})),
    ("authorization_policies", ()),
    ("authorization_policies", ("istio-system/istio_converted_static_strict", "shop/a")),
    ("local", False),
    ("application_tunnel", ApplicationTunnel.PROXY),
]

BASE_SERVICE = Service(
    name="web",
    namespace="shop",
    hostname="web.shop.svc.cluster.local",
    addresses=(ip("10.96.0.10"),),
    ports=(Port(80, 8080),),
)

SERVICE_ROWS: list[tuple[str, Any]] = [
    ("name", "orders"),
    ("namespace", "other"),
    ("hostname", "api.example.com"),
    ("addresses", ()),  # headless
    ("addresses", (ip("10.96.0.10"), ip("fd00:96::10"))),
    ("ports", ()),
    ("ports", (Port(80, 0), Port(443, 8443), Port(65535, 1))),
    ("ports", tuple(Port(80 + i, 0, p) for i, p in enumerate(AppProtocol))),
    ("subject_alt_names", ("spiffe://cluster.local/ns/shop/sa/web", "web.example.com")),
    ("waypoint", GatewayAddress("shop/waypoint.shop.svc.cluster.local")),
    ("waypoint", GatewayAddress("10.0.0.9")),
    ("load_balancing", LoadBalancingMode.STANDARD),
]

MATCH_ROWS: list[tuple[str, tuple[Any, ...]]] = [
    ("namespaces", (StringMatch(MatchKind.EXACT, "shop"), StringMatch(MatchKind.PRESENCE))),
    ("not_namespaces", (StringMatch(MatchKind.PREFIX, "dev"),)),
    ("service_accounts", (ServiceAccountMatch("shop", "web"), ServiceAccountMatch("a", "b"))),
    ("not_service_accounts", (ServiceAccountMatch("dev", "tester"),)),
    ("principals", (StringMatch(MatchKind.SUFFIX, "/sa/web"),)),
    ("not_principals", (StringMatch(MatchKind.PRESENCE),)),
    ("source_ips", (net("10.0.0.0/8"), net("10.0.0.1/32"), net("0.0.0.0/0"))),
    ("not_source_ips", (net("2001:db8::/32"), net("::/0"))),
    ("destination_ips", (net("10.1.0.0/16"),)),
    ("not_destination_ips", (net("2001:db8::1/128"),)),
    ("destination_ports", (80, 8080, 0, 65535)),
    ("not_destination_ports", (9090,)),
]

BASE_POLICY = Authorization(
    name="allow-web",
    namespace="shop",
    scope=Scope.NAMESPACE,
    action=Action.ALLOW,
    groups=(Group((Rules((Match(namespaces=(StringMatch(MatchKind.EXACT, "shop"),)),)),)),),
)

POLICY_ROWS: list[tuple[dict[str, Any]]] = [
    ({"name": "deny-all"},),
    ({"namespace": "other"},),
    ({"scope": Scope.GLOBAL, "namespace": "istio-system"},),
    ({"scope": Scope.WORKLOAD_SELECTOR, "selector": (("app", "web"),)},),
    ({"scope": Scope.WORKLOAD_SELECTOR, "selector": (("app", "web"), ("version", "v1"))},),
    ({"scope": Scope.WORKLOAD_SELECTOR, "selector": ()},),  # empty selector: whole namespace
    ({"scope": Scope.WORKLOAD_SELECTOR, "selector": BY_NAME_SELECTOR},),
    ({"action": Action.DENY},),
    ({"action": Action.AUDIT},),
    ({"action": Action.AUDIT, "scope": Scope.WORKLOAD_SELECTOR, "selector": (("a", "b"),)},),
    ({"groups": ()},),  # never matches
    ({"groups": (Group(),)},),  # an empty rule: always matches
    ({"groups": (Group((Rules(),)),)},),  # an empty clause
    ({"groups": (Group((Rules((Match(),)),)),)},),  # an empty match: never matches
    ({"dry_run": True},),
    ({"dry_run": True, "action": Action.AUDIT},),
    *(
        ({"groups": (Group((Rules((Match(**{field: values}),)),)),)},)
        for field, values in MATCH_ROWS
    ),
    (
        {
            "groups": (
                Group((Rules((Match(destination_ports=(80,)), Match())), Rules())),
                Group(),
                Group((Rules((Match(**dict(MATCH_ROWS)),)),)),
            )
        },
    ),
]


def _roundtrip_address(value: Workload | Service) -> Workload | Service:
    msg = workload_to_proto(value) if isinstance(value, Workload) else service_to_proto(value)
    return address_from_proto(wl_pb.Address.FromString(msg.SerializeToString()))


def _roundtrip_policy(policy: Authorization) -> Authorization:
    wire = authorization_to_proto(policy).SerializeToString()
    return authorization_from_proto(authz_pb.Authorization.FromString(wire))


@pytest.mark.parametrize(("field", "value"), WORKLOAD_ROWS, ids=[r[0] for r in WORKLOAD_ROWS])
def test_workload_field_roundtrips(field: str, value: Any) -> None:
    changed = dataclasses.replace(BASE_WORKLOAD, **{field: value})
    back = _roundtrip_address(changed)
    assert back == changed
    assert getattr(back, field) == value


@pytest.mark.parametrize(("field", "value"), SERVICE_ROWS, ids=[r[0] for r in SERVICE_ROWS])
def test_service_field_roundtrips(field: str, value: Any) -> None:
    changed = dataclasses.replace(BASE_SERVICE, **{field: value})
    assert _roundtrip_address(changed) == changed


@pytest.mark.parametrize("changes", [r[0] for r in POLICY_ROWS], ids=lambda c: ",".join(c))
def test_authorization_field_roundtrips(changes: dict[str, Any]) -> None:
    changed = dataclasses.replace(BASE_POLICY, **changes)
    assert _roundtrip_policy(changed) == changed


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.init}


def test_every_field_has_a_row() -> None:
    assert {r[0] for r in WORKLOAD_ROWS} == _fields(Workload)
    assert {r[0] for r in SERVICE_ROWS} == _fields(Service)
    assert {r[0] for r in MATCH_ROWS} == _fields(Match)
    assert {k for (changes,) in POLICY_ROWS for k in changes} == _fields(Authorization)


def test_every_row_differs_from_the_base() -> None:
    for field, value in WORKLOAD_ROWS:
        assert getattr(BASE_WORKLOAD, field) != value or field == "labels", field
    for field, value in SERVICE_ROWS:
        assert getattr(BASE_SERVICE, field) != value, field


# --- where values go on Istio's wire ----------------------------------------------------


def test_workload_uses_istio_fields() -> None:
    w = workload_to_proto(BASE_WORKLOAD).workload
    assert (w.uid, w.name, w.namespace, w.node) == (
        "Kubernetes//Pod/shop/web-1",
        "web-1",
        "shop",
        "node-1",
    )
    assert list(w.addresses) == [bytes([10, 0, 0, 5])]
    assert w.tunnel_protocol == wl_pb.HBONE and w.status == wl_pb.HEALTHY
    assert w.workload_type == wl_pb.DEPLOYMENT
    assert w.services["shop/web.shop.svc.cluster.local"].ports[0].target_port == 8080
    assert list(w.authorization_policies) == ["shop/allow-web"]
    assert not w.HasField("application_tunnel") and not w.HasField("waypoint")


def test_workload_extension_only_for_what_istio_lacks() -> None:
    plain = dataclasses.replace(BASE_WORKLOAD, labels=FrozenMap())
    assert list(workload_to_proto(plain).workload.extensions) == []
    entry = dataclasses.replace(plain, workload_type="workloadentry", local=False)
    w = workload_to_proto(entry).workload
    assert w.workload_type == wl_pb.POD  # as istiod sends WorkloadEntries
    assert [e.name for e in w.extensions] == [WORKLOAD_EXTENSION]
    assert w.extensions[0].config.type_url == (
        "type.googleapis.com/ambient.xds.v1.WorkloadExtension"
    )


def test_waypoint_forms() -> None:
    by_host = workload_to_proto(
        dataclasses.replace(BASE_WORKLOAD, waypoint=GatewayAddress("shop/wp.shop.svc"))
    ).workload.waypoint
    assert (by_host.hostname.namespace, by_host.hostname.hostname) == ("shop", "wp.shop.svc")
    assert by_host.hbone_mtls_port == 15008
    by_ip = workload_to_proto(
        dataclasses.replace(BASE_WORKLOAD, network="n1", waypoint=GatewayAddress("10.0.0.9"))
    ).workload.waypoint
    assert (by_ip.address.network, by_ip.address.address) == ("n1", bytes([10, 0, 0, 9]))
    with pytest.raises(ValueError, match="neither an IP nor namespace/hostname"):
        workload_to_proto(dataclasses.replace(BASE_WORKLOAD, waypoint=GatewayAddress("wp")))


def test_service_uses_istio_fields() -> None:
    s = service_to_proto(
        dataclasses.replace(BASE_SERVICE, load_balancing=LoadBalancingMode.STANDARD)
    ).service
    assert [a.address for a in s.addresses] == [bytes([10, 96, 0, 10])]
    assert s.HasField("load_balancing") and s.load_balancing.mode == 0
    assert not service_to_proto(BASE_SERVICE).service.HasField("load_balancing")


def test_selector_policy_travels_as_istio_does_plus_extension() -> None:
    policy = dataclasses.replace(
        BASE_POLICY, scope=Scope.WORKLOAD_SELECTOR, selector=(("app", "web"),)
    )
    msg = authorization_to_proto(policy)
    assert msg.scope == authz_pb.WORKLOAD_SELECTOR and msg.action == authz_pb.ALLOW
    assert [e.name for e in msg.extensions] == [AUTHORIZATION_EXTENSION]
    # as istiod sends it: no extension; workloads name it in authorization_policies
    del msg.extensions[:]
    assert authorization_from_proto(msg).selector == BY_NAME_SELECTOR


def test_by_name_selector_selects_no_labels() -> None:
    policy = dataclasses.replace(
        BASE_POLICY, scope=Scope.WORKLOAD_SELECTOR, selector=BY_NAME_SELECTOR
    )
    assert not policy.selects({"app": "web"})
    assert list(authorization_to_proto(policy).extensions) == []


def test_audit_is_a_deny_that_never_matches_on_the_wire() -> None:
    policy = dataclasses.replace(BASE_POLICY, action=Action.AUDIT)
    msg = authorization_to_proto(policy)
    assert msg.action == authz_pb.DENY and list(msg.groups) == []
    assert _roundtrip_policy(policy).action is Action.AUDIT


def test_namespace_and_global_policies_carry_no_extension() -> None:
    assert list(authorization_to_proto(BASE_POLICY).extensions) == []


def test_networks_keep_istio_address_and_length() -> None:
    policy = dataclasses.replace(
        BASE_POLICY, groups=(Group((Rules((Match(source_ips=(net("10.1.0.0/16"),)),)),)),)
    )
    address = authorization_to_proto(policy).groups[0].rules[0].matches[0].source_ips[0]
    assert (address.address, address.length) == (bytes([10, 1, 0, 0]), 16)


# --- messages made by istiod ------------------------------------------------------------


def test_istiod_workload_decodes_with_ztunnel_defaults() -> None:
    msg = wl_pb.Address(
        workload=wl_pb.Workload(
            uid="c1//Pod/shop/web-1",
            name="web-1",
            namespace="shop",
            addresses=[bytes([10, 0, 0, 5])],
            tunnel_protocol=wl_pb.HBONE,
            workload_type=wl_pb.POD,
            hostname="ignored.example.com",
            native_tunnel=True,
            locality=wl_pb.Locality(region="r", zone="z"),
            network_mode=wl_pb.HOST_NETWORK,
            application_tunnel=wl_pb.ApplicationTunnel(
                protocol=wl_pb.ApplicationTunnel.PROXY, port=15088
            ),
            extensions=[wl_pb.Extension(name="someone.else/x", config=any_pb2.Any())],
        )
    )
    msg.workload.capacity.value = 3
    w = address_from_proto(msg)
    assert isinstance(w, Workload)
    assert (w.trust_domain, w.service_account) == ("cluster.local", "default")
    assert w.workload_type == "pod" and w.labels == {} and w.local
    assert w.application_tunnel is ApplicationTunnel.PROXY
    assert w.addresses == (ip("10.0.0.5"),)


def test_istiod_static_strict_policy_decodes() -> None:
    msg = authz_pb.Authorization(
        name="istio_converted_static_strict",
        namespace="istio-system",
        scope=authz_pb.WORKLOAD_SELECTOR,
        action=authz_pb.DENY,
        groups=[
            authz_pb.Group(
                rules=[
                    authz_pb.Rules(
                        matches=[authz_pb.Match(not_principals=[authz_pb.StringMatch(presence={})])]
                    )
                ]
            )
        ],
    )
    policy = authorization_from_proto(msg)
    assert policy.action is Action.DENY and policy.selector == BY_NAME_SELECTOR
    assert policy.groups[0].rules[0].matches[0].not_principals == (StringMatch(MatchKind.PRESENCE),)


def test_istiod_address_with_host_bits_is_masked() -> None:
    match = authz_pb.Match(source_ips=[authz_pb.Address(address=bytes([10, 0, 0, 7]), length=24)])
    msg = authz_pb.Authorization(
        name="a", namespace="b", groups=[authz_pb.Group(rules=[authz_pb.Rules(matches=[match])])]
    )
    m = authorization_from_proto(msg).groups[0].rules[0].matches[0]
    assert m.source_ips == (net("10.0.0.0/24"),)


# --- refused ------------------------------------------------------------------------------


def _policy_with(match: authz_pb.Match, **fields: Any) -> authz_pb.Authorization:
    return authz_pb.Authorization(
        name="p",
        namespace="ns",
        groups=[authz_pb.Group(rules=[authz_pb.Rules(matches=[match])])],
        **fields,
    )


def UNKNOWN_ENUM(number: int) -> Any:
    """An enum number the proto does not define (typed as the field's enum for the stubs)."""
    return number


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (wl_pb.Address(), "neither a workload nor a service"),
        (wl_pb.Address(workload=wl_pb.Workload(uid="u", addresses=[b"\x01\x02"])), "2 bytes"),
        (
            wl_pb.Address(
                workload=wl_pb.Workload(uid="u", tunnel_protocol=wl_pb.LEGACY_ISTIO_MTLS)
            ),
            "unsupported tunnel protocol",
        ),
        (
            wl_pb.Address(workload=wl_pb.Workload(uid="u", workload_type=UNKNOWN_ENUM(7))),
            "workload type 7",
        ),
        (
            wl_pb.Address(workload=wl_pb.Workload(uid="u", status=UNKNOWN_ENUM(5))),
            "workload status 5",
        ),
        (
            wl_pb.Address(workload=wl_pb.Workload(uid="u", application_tunnel={"protocol": 9})),
            "application tunnel protocol 9",
        ),
        (
            wl_pb.Address(
                workload=wl_pb.Workload(uid="u", waypoint=wl_pb.GatewayAddress(hbone_mtls_port=1))
            ),
            "neither a hostname nor an address",
        ),
        (
            wl_pb.Address(
                workload=wl_pb.Workload(
                    uid="u",
                    extensions=[
                        wl_pb.Extension(
                            name=WORKLOAD_EXTENSION,
                            config=any_pb2.Any(type_url="type.googleapis.com/x.Y"),
                        )
                    ],
                )
            ),
            "carries type.googleapis.com/x.Y",
        ),
        (
            wl_pb.Address(
                service=wl_pb.Service(name="s", addresses=[wl_pb.NetworkAddress(address=b"\x01")])
            ),
            "service ",
        ),
    ],
)
def test_undecodable_addresses(message: wl_pb.Address, error: str) -> None:
    with pytest.raises(DecodeError, match=error):
        address_from_proto(message)


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (_policy_with(authz_pb.Match(namespaces=[authz_pb.StringMatch()])), "no match type"),
        (
            _policy_with(authz_pb.Match(namespaces=[authz_pb.StringMatch(exact="")])),
            "non-empty value",
        ),
        (_policy_with(authz_pb.Match(destination_ports=[70000])), "not in 0..65535"),
        (
            _policy_with(
                authz_pb.Match(source_ips=[authz_pb.Address(address=bytes(4), length=33)])
            ),
            "does not appear to be an IPv4 or IPv6 network",
        ),
        (_policy_with(authz_pb.Match(), scope=9), "unsupported scope 9"),
        (_policy_with(authz_pb.Match(), action=3), "unsupported action 3"),
        (authz_pb.Authorization(namespace="ns"), "needs a name"),
    ],
)
def test_undecodable_authorizations(message: authz_pb.Authorization, error: str) -> None:
    with pytest.raises(DecodeError, match=error):
        authorization_from_proto(message)


def _with_extension(msg: authz_pb.Authorization, **ext: Any) -> authz_pb.Authorization:
    from ambient.xds.proto import extensions_pb2

    packed = any_pb2.Any()
    packed.Pack(extensions_pb2.AuthorizationExtension(**ext))
    msg.extensions.add(name=AUTHORIZATION_EXTENSION, config=packed)
    return msg


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (
            _with_extension(authz_pb.Authorization(name="p", namespace="n"), audit=True),
            "AUDIT policy must be sent as a DENY",
        ),
        (
            _with_extension(
                authz_pb.Authorization(name="p", namespace="n", action=authz_pb.DENY),
                audit_groups=[authz_pb.Group()],
            ),
            "not AUDIT",
        ),
        (
            _with_extension(
                authz_pb.Authorization(name="p", namespace="n", scope=authz_pb.NAMESPACE),
                selector={"match_labels": {"a": "b"}},
            ),
            "selector on a NAMESPACE policy",
        ),
    ],
)
def test_inconsistent_extensions_are_refused(message: authz_pb.Authorization, error: str) -> None:
    with pytest.raises(DecodeError, match=error):
        authorization_from_proto(message)


def test_an_app_protocol_from_a_newer_istiod_reads_as_unknown() -> None:
    message = service_to_proto(BASE_SERVICE)
    message.service.ports[0].app_protocol = 42  # type: ignore[assignment]
    decoded = address_from_proto(message)
    assert isinstance(decoded, Service)
    assert decoded.ports == (Port(80, 8080, AppProtocol.UNKNOWN),)
