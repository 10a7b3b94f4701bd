"""Waypoint configuration over delta ADS: ``WaypointResource`` from ``XdsServer`` to an
``XdsClient`` feeding an ``L7Config``, on loopback gRPC.

The shop plus ``examples/waypoint/l7.yaml`` (a waypoint, a DestinationRule, the 90/10
VirtualService, an L7 AuthorizationPolicy with targetRefs) in a real ``ControlPlane``.
Covers: one resource per L7 object, incremental pushes and removals, the order against
addresses, Istio-style clients getting nothing of it, the client's sync and NACK, and
the waypoint's authorizer following edits (and failing closed before its first sync).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from google.protobuf import any_pb2

from ambient.config import ConfigSet, load_text
from ambient.config.configset import Ref
from ambient.config.l7objects import is_l7_object
from ambient.controlplane import ControlPlane
from ambient.identity import CertificateAuthority
from ambient.identity.spiffe import SpiffeId
from ambient.state.proxy import ProxyState
from ambient.waypoint.config import NOT_CONFIGURED, L7Config, LiveAuthorizer
from ambient.waypoint.model import Downstream, RequestHead, Target
from ambient.waypoint.policy import WaypointRef
from ambient.xds.client import XdsClient
from ambient.xds.codec import ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL, WAYPOINT_TYPE_URL
from ambient.xds.proto import discovery_pb2, extensions_pb2
from ambient.xds.published import resource_version
from ambient.xds.server import XdsServer
from tests.unit.xds.test_ads_client import ScriptedAds
from tests.unit.xds.test_ads_server import Probe

ROOT = Path(__file__).resolve().parents[3]
SHOP = (ROOT / "examples/shop/shop.yaml").read_text()
L7 = (ROOT / "examples/waypoint/l7.yaml").read_text()
TIMEOUT = 5.0
FAST = (0.02, 0.1)
L7_NAMES = [
    "AuthorizationPolicy/shop/orders-l7",
    "DestinationRule/shop/orders",
    "VirtualService/shop/orders",
]
ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web-route, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules: [{backendRefs: [{name: web, port: 8080}]}]
"""
SELECTOR_POLICY = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: l4-only, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  rules: [{from: [{source: {namespaces: [shop]}}]}]
"""
ORDERS = Target("shop", "orders.shop.svc.cluster.local", ipaddress.ip_address("127.20.0.9"), 8080)
GET_API = RequestHead("GET", "orders:8080", "/api/health")


def config(*extra: str, l7: str = L7) -> ConfigSet:
    return load_text("\n---\n".join([SHOP, l7, *extra]), "shop.yaml")


def caller(account: str) -> Downstream:
    identity = SpiffeId.parse(f"spiffe://cluster.local/ns/shop/sa/{account}")
    return Downstream(identity, ipaddress.ip_address("127.10.0.5"))


def l7_objects(cfg: ConfigSet) -> dict[Ref, object]:
    return {ref: obj for ref, obj in cfg.objects.items() if is_l7_object(obj)}


def manifest(response: discovery_pb2.DeltaDiscoveryResponse, name: str) -> dict[str, object]:
    (resource,) = [r for r in response.resources if r.name == name]
    message = extensions_pb2.WaypointResource()
    assert resource.resource.Unpack(message)
    loaded: dict[str, object] = json.loads(message.manifest_json)
    return loaded


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.generate()


@pytest.fixture
def plane(ca: CertificateAuthority) -> ControlPlane:
    return ControlPlane(ca, config=config())


@pytest.fixture
async def server(plane: ControlPlane) -> AsyncIterator[XdsServer]:
    server = XdsServer(plane, credentials=None)
    await server.start("127.0.0.1:0")
    yield server
    await server.stop(grace=0.1)


@pytest.fixture
async def probe(server: XdsServer) -> AsyncIterator[Probe]:
    probe = Probe(server.port)
    yield probe
    await probe.close()


async def subscribe_all(probe: Probe) -> dict[str, discovery_pb2.DeltaDiscoveryResponse]:
    """As ambient's ztunnel: the waypoint type first, then Istio's two; ACK each."""
    first = {}
    for type_url in (WAYPOINT_TYPE_URL, ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL):
        await probe.subscribe(type_url)
        response = await probe.read()
        await probe.ack(response)
        first[response.type_url] = response
    return first


# -- the server --------------------------------------------------------------------------


async def test_one_resource_per_l7_object(probe: Probe) -> None:
    first = await subscribe_all(probe)
    l7 = first[WAYPOINT_TYPE_URL]
    assert [r.name for r in l7.resources] == L7_NAMES
    assert all(r.resource.type_url == WAYPOINT_TYPE_URL for r in l7.resources)
    vs = manifest(l7, "VirtualService/shop/orders")
    assert vs["kind"] == "VirtualService" and vs["metadata"] == {
        "name": "orders",
        "namespace": "shop",
    }


async def test_selector_policies_are_not_waypoint_resources(ca: CertificateAuthority) -> None:
    plane = ControlPlane(ca, config=config(SELECTOR_POLICY))
    server = XdsServer(plane, credentials=None)
    await server.start("127.0.0.1:0")
    probe = Probe(server.port)
    try:
        first = await subscribe_all(probe)
        assert [r.name for r in first[WAYPOINT_TYPE_URL].resources] == L7_NAMES
        assert "shop/l4-only" in [r.name for r in first[AUTHORIZATION_TYPE_URL].resources]
    finally:
        await probe.close()
        await server.stop(grace=0.1)


async def test_edit_pushes_that_object_only_and_removal_its_name(
    probe: Probe, plane: ControlPlane
) -> None:
    await subscribe_all(probe)
    plane.update(
        config(l7=L7.replace("weight: 90", "weight: 50").replace("weight: 10", "weight: 50"))
    )
    push = await probe.read()
    await probe.ack(push)
    assert push.type_url == WAYPOINT_TYPE_URL
    assert [r.name for r in push.resources] == ["VirtualService/shop/orders"]
    assert "weight: 50" not in json.dumps(manifest(push, "VirtualService/shop/orders"))
    assert '"weight": 50' in json.dumps(manifest(push, "VirtualService/shop/orders"))
    assert list(push.removed_resources) == []
    # an HTTPRoute added, the DestinationRule removed: one push of each
    without_dr = config(ROUTE)
    objects = {r: o for r, o in without_dr.objects.items() if r.kind != "DestinationRule"}
    plane.update(ConfigSet(objects, without_dr.origins))
    pushed = [await probe.read(), await probe.read()]
    assert [
        (p.type_url, [r.name for r in p.resources], list(p.removed_resources)) for p in pushed
    ] == [
        (WAYPOINT_TYPE_URL, ["HTTPRoute/shop/web-route", "VirtualService/shop/orders"], []),
        (WAYPOINT_TYPE_URL, [], ["DestinationRule/shop/orders"]),
    ]


async def test_l7_before_the_addresses_that_bind_to_the_waypoint(
    probe: Probe, plane: ControlPlane
) -> None:
    await subscribe_all(probe)
    plane.update(config(ROUTE))  # only L7 changed: only an L7 push
    only = await probe.read()
    assert (only.type_url, [r.name for r in only.resources]) == (
        WAYPOINT_TYPE_URL,
        ["HTTPRoute/shop/web-route"],
    )
    # one change binds the namespace to the waypoint (addresses) and edits a route (L7):
    # the waypoint gets the L7 change first
    bound = SHOP.replace(
        "istio.io/dataplane-mode: ambient",
        "istio.io/dataplane-mode: ambient\n    istio.io/use-waypoint: waypoint",
    )
    assert bound != SHOP
    edited = L7.replace("weight: 90", "weight: 80").replace("weight: 10", "weight: 20")
    plane.update(load_text("\n---\n".join([bound, edited, ROUTE]), "shop.yaml"))
    pushed = [await probe.read(), await probe.read()]
    assert [p.type_url for p in pushed] == [WAYPOINT_TYPE_URL, ADDRESS_TYPE_URL]
    assert [r.name for r in pushed[0].resources] == ["VirtualService/shop/orders"]
    # unbinding and removing the route at once: the addresses first, the L7 removal last
    plane.update(load_text("\n---\n".join([SHOP, edited]), "shop.yaml"))
    pushed = [await probe.read(), await probe.read()]
    assert [p.type_url for p in pushed] == [ADDRESS_TYPE_URL, WAYPOINT_TYPE_URL]
    assert list(pushed[1].removed_resources) == ["HTTPRoute/shop/web-route"]
    assert not pushed[1].resources


async def test_istio_clients_get_nothing_of_it(probe: Probe, plane: ControlPlane) -> None:
    first = await probe.synced()  # Address and Authorization only, as Istio's ztunnel
    assert set(first) == {ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL}
    plane.update(config(ROUTE))  # an L7-only change: nothing for this client
    plane.label("Pod", "shop", "probe", "tier", "debug")  # then an address change
    push = await probe.read()
    assert push.type_url == ADDRESS_TYPE_URL


# -- the client ----------------------------------------------------------------------------


async def until(l7: L7Config, check: Callable[[], bool]) -> None:
    """Wait (bounded) until ``check()`` holds after some change of ``l7``."""
    changed = asyncio.Event()
    l7.on_change(lambda _l7: changed.set())
    async with asyncio.timeout(TIMEOUT):
        while not check():
            changed.clear()
            await changed.wait()


@pytest.fixture
async def node(server: XdsServer) -> AsyncIterator[tuple[XdsClient, L7Config]]:
    l7 = L7Config()
    client = XdsClient(
        f"127.0.0.1:{server.port}",
        "node-1",
        ProxyState("node-1"),
        credentials=None,
        backoff=FAST,
        l7=l7,
    )
    client.start()
    yield client, l7
    await client.close()


async def test_client_syncs_l7_then_follows_edits(
    node: tuple[XdsClient, L7Config], plane: ControlPlane
) -> None:
    client, l7 = node
    authorizer = LiveAuthorizer(l7, WaypointRef("shop", "waypoint"))
    verdict = authorizer.check(ORDERS, caller("web"), GET_API, None)
    assert not verdict.allowed and verdict.reason == NOT_CONFIGURED  # fail closed
    await asyncio.wait_for(client.synced.wait(), TIMEOUT)
    assert l7.synced and l7.names == L7_NAMES
    assert dict(l7.config.objects) == l7_objects(plane.config)  # same validated objects
    assert authorizer.check(ORDERS, caller("web"), GET_API, None).allowed
    assert not authorizer.check(ORDERS, caller("probe"), GET_API, None).allowed
    # an edit of the policy reaches the waypoint's authorizer
    plane.update(config(l7=L7.replace("sa/web", "sa/probe")))
    await until(l7, lambda: authorizer.check(ORDERS, caller("probe"), GET_API, None).allowed)
    assert not authorizer.check(ORDERS, caller("web"), GET_API, None).allowed
    # and its removal: no ALLOW policy left, so everything is allowed (Istio's rule)
    cfg = config()
    plane.update(
        ConfigSet(
            {
                r: o
                for r, o in cfg.objects.items()
                if r.kind != "AuthorizationPolicy" or r.name != "orders-l7"
            },
            cfg.origins,
        )
    )
    await until(l7, lambda: "AuthorizationPolicy/shop/orders-l7" not in l7.names)
    assert authorizer.check(ORDERS, caller("web"), GET_API, None).allowed
    assert client.nacks == 0 and client.versions[WAYPOINT_TYPE_URL].keys() == set(l7.names)


def waypoint_response(*items: tuple[str, str]) -> discovery_pb2.DeltaDiscoveryResponse:
    resources = []
    for name, text in items:
        packed = any_pb2.Any()
        packed.Pack(extensions_pb2.WaypointResource(manifest_json=text), deterministic=True)
        resources.append(
            discovery_pb2.Resource(name=name, version=resource_version(packed), resource=packed)
        )
    return discovery_pb2.DeltaDiscoveryResponse(type_url=WAYPOINT_TYPE_URL, resources=resources)


GOOD_ROUTE = json.dumps(
    load_text(ROUTE, "r.yaml").origins[Ref("HTTPRoute", "shop", "web-route")].source
)
BAD_ROUTE = GOOD_ROUTE.replace('"port": 8080', '"port": "eighty"')


async def test_client_nacks_an_invalid_manifest_with_the_loaders_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert BAD_ROUTE != GOOD_ROUTE
    ads = ScriptedAds()
    await ads.start()
    l7 = L7Config()
    client = XdsClient(
        f"127.0.0.1:{ads.port}",
        "node-1",
        ProxyState("node-1"),
        credentials=None,
        backoff=FAST,
        l7=l7,
    )
    client.start()
    try:
        requests = [await ads.request() for _ in range(3)]
        assert [r.type_url for r in requests] == [
            WAYPOINT_TYPE_URL,
            ADDRESS_TYPE_URL,
            AUTHORIZATION_TYPE_URL,
        ]
        ack = await ads.send(waypoint_response(("HTTPRoute/shop/web-route", GOOD_ROUTE)))
        assert not ack.HasField("error_detail") and l7.names == ["HTTPRoute/shop/web-route"]
        version = l7.version
        with caplog.at_level(logging.WARNING, logger="ambient.xds"):
            nack = await ads.send(
                waypoint_response(
                    ("HTTPRoute/shop/web-route", BAD_ROUTE),
                    ("HTTPRoute/shop/other", GOOD_ROUTE),  # misnamed: it describes web-route
                )
            )
        detail = nack.error_detail.message
        assert nack.HasField("error_detail") and nack.type_url == WAYPOINT_TYPE_URL
        assert "HTTPRoute/shop/web-route" in detail and "port" in detail, detail
        assert "HTTPRoute/shop/other: it describes HTTPRoute/shop/web-route" in detail, detail
        assert l7.version == version and l7.names == ["HTTPRoute/shop/web-route"]  # nothing applied
        assert client.nacks == 1 and "WaypointResource push" in caplog.text
        assert not client.synced.is_set()  # addresses and policies not yet received
    finally:
        await client.close()
        await ads.stop()
