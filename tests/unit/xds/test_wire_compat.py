"""Wire compatibility with Istio and Envoy, judged by an independent decoder.

Every message is filled completely (each oneof member in turn), serialized, and
decoded by ``protoc --decode_raw``, which knows nothing of our .proto files; each field
must sit under the number the published API gives it (``istio_api``). The codec's
own output is checked the same way, and the descriptors, enums, gRPC paths and type
URLs are compared with the published names.
"""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest
from google.protobuf import any_pb2, descriptor_pool
from google.protobuf.message import Message

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
    GatewayAddress,
    LoadBalancingMode,
    Port,
    Service,
    TunnelProtocol,
    Workload,
    WorkloadStatus,
)
from ambient.xds import codec
from ambient.xds.proto import (
    authorization_pb2,
    ca_pb2,
    ca_pb2_grpc,
    discovery_pb2,
    discovery_pb2_grpc,
    extensions_pb2,
    workload_pb2,
)

from .istio_api import FIELD_NUMBERS, ISTIO, ISTIO_ENUMS
from .rawproto import as_bytes, check, decode_raw, fill, protoc_command

needs_protoc = pytest.mark.skipif(
    protoc_command() is None,
    reason="protoc --decode_raw is the independent decoder: install protobuf-compiler "
    "(Debian) or grpcio-tools (the dev extra)",
)

ROOTS: list[type[Message]] = [
    workload_pb2.Address,
    authorization_pb2.Authorization,
    ca_pb2.IstioCertificateRequest,
    ca_pb2.IstioCertificateResponse,
    discovery_pb2.DeltaDiscoveryRequest,
    discovery_pb2.DeltaDiscoveryResponse,
    discovery_pb2.DiscoveryRequest,
    discovery_pb2.DiscoveryResponse,
    extensions_pb2.WorkloadExtension,
    extensions_pb2.AuthorizationExtension,
]
VARIANTS = range(4)  # the largest oneof (StringMatch) has four members


def _filled(root: type[Message], variant: int) -> Message:
    msg = root()
    fill(msg, variant)
    return msg


@needs_protoc
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("root", ROOTS, ids=lambda r: r.DESCRIPTOR.full_name)
def test_every_field_is_on_its_published_number(root: type[Message], variant: int) -> None:
    msg = _filled(root, variant)
    assert check(decode_raw(msg.SerializeToString()), msg, FIELD_NUMBERS) == []


@needs_protoc
def test_every_table_field_reaches_the_wire() -> None:
    covered: set[tuple[str, str]] = set()
    for root in ROOTS:
        for variant in VARIANTS:
            msg = _filled(root, variant)
            assert check(decode_raw(msg.SerializeToString()), msg, FIELD_NUMBERS, covered) == []
    wanted = {(m, f) for m, fields in FIELD_NUMBERS.items() for f in fields}
    assert wanted - covered == set()


@pytest.mark.parametrize("name", sorted(FIELD_NUMBERS))
def test_descriptor_has_exactly_the_table_fields(name: str) -> None:
    # Istio messages: all of Istio's fields; Envoy's: the subset we carry, Envoy's numbers.
    desc = descriptor_pool.Default().FindMessageTypeByName(name)
    assert {f.name: f.number for f in desc.fields} == FIELD_NUMBERS[name]


def test_every_istio_message_we_define_is_in_the_table() -> None:
    ours = {
        *workload_pb2.DESCRIPTOR.message_types_by_name.values(),
        *authorization_pb2.DESCRIPTOR.message_types_by_name.values(),
        *ca_pb2.DESCRIPTOR.message_types_by_name.values(),
    }
    nested = {n for m in ours for n in m.nested_types if not n.GetOptions().map_entry}
    assert {m.full_name for m in ours | nested} == set(ISTIO)


@pytest.mark.parametrize("name", sorted(ISTIO_ENUMS))
def test_enum_values_are_istios(name: str) -> None:
    enum = descriptor_pool.Default().FindEnumTypeByName(name)
    assert {v.name: v.number for v in enum.values} == ISTIO_ENUMS[name]


def test_grpc_paths_are_the_published_ones() -> None:
    ads = discovery_pb2.DESCRIPTOR.services_by_name["AggregatedDiscoveryService"]
    ca = ca_pb2.DESCRIPTOR.services_by_name["IstioCertificateService"]
    assert ads.full_name == "envoy.service.discovery.v3.AggregatedDiscoveryService"
    assert ca.full_name == "istio.v1.auth.IstioCertificateService"
    delta = ads.methods_by_name["DeltaAggregatedResources"]
    assert (delta.input_type.full_name, delta.output_type.full_name) == (
        "envoy.service.discovery.v3.DeltaDiscoveryRequest",
        "envoy.service.discovery.v3.DeltaDiscoveryResponse",
    )
    create = ca.methods_by_name["CreateCertificate"]
    assert create.input_type.full_name == "istio.v1.auth.IstioCertificateRequest"
    # the generated stubs use the same paths
    assert hasattr(discovery_pb2_grpc, "AggregatedDiscoveryServiceStub")
    assert hasattr(ca_pb2_grpc, "IstioCertificateServiceStub")


def test_type_urls() -> None:
    packed = any_pb2.Any()
    packed.Pack(workload_pb2.Address())
    assert packed.type_url == codec.ADDRESS_TYPE_URL == "type.googleapis.com/istio.workload.Address"
    packed.Pack(authorization_pb2.Authorization())
    assert packed.type_url == codec.AUTHORIZATION_TYPE_URL
    assert codec.AUTHORIZATION_TYPE_URL == "type.googleapis.com/istio.security.Authorization"


# --- the codec's output -----------------------------------------------------------------

WORKLOAD = Workload(
    uid="Kubernetes//Pod/shop/web-1",
    name="web-1",
    namespace="shop",
    addresses=(ipaddress.ip_address("10.0.0.5"), ipaddress.ip_address("fd00::5")),
    service_account="web",
    node="node-1",
    tunnel_protocol=TunnelProtocol.HBONE,
    trust_domain="example.org",
    cluster_id="c1",
    network="net-1",
    workload_name="web",
    workload_type="deployment",
    canonical_name="web-app",
    canonical_revision="v1",
    services=FrozenMap({"shop/web.shop.svc.cluster.local": (Port(80, 8080),)}),
    waypoint=GatewayAddress("shop/waypoint.shop.svc.cluster.local"),
    status=WorkloadStatus.UNHEALTHY,
    labels=FrozenMap({"app": "web"}),
    authorization_policies=("shop/allow-web",),
    local=False,
    application_tunnel=ApplicationTunnel.PROXY,
)
SERVICE = Service(
    "web",
    "shop",
    "web.shop.svc.cluster.local",
    (ipaddress.ip_address("10.96.0.10"),),
    (Port(80, 8080), Port(443, 0)),
    ("spiffe://cluster.local/ns/shop/sa/web",),
    GatewayAddress("10.0.0.9", 15008),
    LoadBalancingMode.STANDARD,
)


def _every_match_field() -> Match:
    def net(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return (ipaddress.ip_network(text),)

    sa = (ServiceAccountMatch("shop", "web"),)
    return Match(
        namespaces=(StringMatch(MatchKind.EXACT, "shop"),),
        not_namespaces=(StringMatch(MatchKind.PREFIX, "dev"),),
        service_accounts=sa,
        not_service_accounts=sa,
        principals=(StringMatch(MatchKind.SUFFIX, "/sa/web"),),
        not_principals=(StringMatch(MatchKind.PRESENCE),),
        source_ips=net("10.0.0.0/8"),
        not_source_ips=net("2001:db8::/32"),
        destination_ips=net("10.1.0.0/16"),
        not_destination_ips=net("10.1.2.3/32"),
        destination_ports=(8087,),  # first varint byte 0x97: decode_raw keeps it a string
        not_destination_ports=(9095,),
    )


POLICY = Authorization(
    "allow-web",
    "shop",
    Scope.WORKLOAD_SELECTOR,
    Action.ALLOW,
    (Group((Rules((_every_match_field(),)),)),),
    dry_run=True,
    selector=(("app", "web"),),
)


@needs_protoc
@pytest.mark.parametrize(
    "message",
    [
        codec.workload_to_proto(WORKLOAD),
        codec.service_to_proto(SERVICE),
        codec.authorization_to_proto(POLICY),
        codec.authorization_to_proto(dataclasses.replace(POLICY, action=Action.AUDIT)),
    ],
    ids=["workload", "service", "authorization", "audit"],
)
def test_codec_output_uses_istio_numbers(message: Message) -> None:
    assert check(decode_raw(message.SerializeToString()), message, FIELD_NUMBERS) == []


@needs_protoc
def test_workload_fields_on_the_wire() -> None:
    raw = decode_raw(codec.workload_to_proto(WORKLOAD).SerializeToString())
    w = raw[1][0]  # Address.workload
    assert w[20] == [b"Kubernetes//Pod/shop/web-1"]  # uid
    assert w[3] == [bytes([10, 0, 0, 5]), ipaddress.ip_address("fd00::5").packed]
    assert w[5] == [1] and w[17] == [1]  # HBONE, UNHEALTHY
    assert 12 not in w  # workload_type DEPLOYMENT is 0: proto3 leaves it out
    assert w[16] == [b"shop/allow-web"]
    assert w[22] == [{1: [b"shop/web.shop.svc.cluster.local"], 2: [{1: [{1: [80], 2: [8080]}]}]}]
    assert w[8] == [{1: [{1: [b"shop"], 2: [b"waypoint.shop.svc.cluster.local"]}], 3: [15008]}]
    assert w[23] == [{1: [1]}]  # application_tunnel PROXY
    # labels and "not local" travel only in the extension
    assert [e[1] for e in w[26]] == [[codec.WORKLOAD_EXTENSION.encode()]]


@needs_protoc
def test_authorization_fields_on_the_wire() -> None:
    raw = decode_raw(codec.authorization_to_proto(POLICY).SerializeToString())
    assert [as_bytes(v) for v in raw[1]] == [b"allow-web"]  # decode_raw may nest a string
    assert raw[2] == [b"shop"]
    assert raw[3] == [2] and 4 not in raw and raw[6] == [1]  # WORKLOAD_SELECTOR, ALLOW, dry run
    match = raw[5][0][1][0][2][0]  # groups[0].rules[0].matches[0]
    assert match[1] == [{1: [b"shop"]}] and match[2] == [{2: [b"dev"]}]
    assert match[3] == [{3: [b"/sa/web"]}] and match[4] == [{4: [b""]}]
    assert match[5] == [{1: [bytes([10, 0, 0, 0])], 2: [8]}]
    assert match[11] == [{1: [b"shop"], 2: [b"web"]}]
