"""XdsServer on loopback, driven by a raw delta ADS client (what ztunnel sends, by hand).

Initial state per type, incremental pushes, removals, the order within a push, ACK and
NACK, ``initial_resource_versions`` on reconnect, several clients, refusals, shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from ambient.config import ConfigSet, load_text
from ambient.config.configset import Ref
from ambient.controlplane import ControlPlane
from ambient.controlplane.source import NotAuthorized
from ambient.identity import CertificateAuthority
from ambient.xds.codec import (
    ADDRESS_TYPE_URL,
    AUTHORIZATION_TYPE_URL,
    address_from_proto,
)
from ambient.xds.proto import core_pb2, discovery_pb2, workload_pb2
from ambient.xds.server import XdsServer

ROOT = Path(__file__).resolve().parents[3]
SHOP = (ROOT / "examples/shop/shop.yaml").read_text()
SECTION4 = (ROOT / "examples/policies/section4-strict-deny-all.yaml").read_text()
METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
STATIC_STRICT = "istio-system/istio_converted_static_strict"
PROBE = "Kubernetes//Pod/shop/probe"
TIMEOUT = 5.0

ALLOW_PROBE = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web-allow-probe, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/probe]}}]}]
"""


def config(*extra: str) -> ConfigSet:
    return load_text("\n---\n".join([SHOP, SECTION4, *extra]), "shop.yaml")


def without(cfg: ConfigSet, *refs: Ref) -> ConfigSet:
    return ConfigSet(
        objects={r: o for r, o in cfg.objects.items() if r not in refs},
        origins={r: o for r, o in cfg.origins.items() if r not in refs},
    )


class Probe:
    """One delta ADS stream, written and read by the test."""

    def __init__(self, port: int, node: str = "node-1") -> None:
        self.node = node
        self.channel: Any = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.call: Any = self.channel.stream_stream(
            METHOD,
            request_serializer=discovery_pb2.DeltaDiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DeltaDiscoveryResponse.FromString,
        )()

    async def subscribe(
        self, type_url: str, initial: dict[str, str] | None = None, *, node: bool = True
    ) -> None:
        await self.call.write(
            discovery_pb2.DeltaDiscoveryRequest(
                node=core_pb2.Node(id=self.node) if node else None,
                type_url=type_url,
                initial_resource_versions=initial or {},
            )
        )

    async def read(self) -> discovery_pb2.DeltaDiscoveryResponse:
        response = await asyncio.wait_for(self.call.read(), TIMEOUT)
        assert response is not grpc.aio.EOF, "the server ended the stream"
        assert isinstance(response, discovery_pb2.DeltaDiscoveryResponse)
        return response

    async def ack(self, response: discovery_pb2.DeltaDiscoveryResponse, error: str = "") -> None:
        request = discovery_pb2.DeltaDiscoveryRequest(
            type_url=response.type_url, response_nonce=response.nonce
        )
        if error:
            request.error_detail.message = error
        await self.call.write(request)

    async def synced(self) -> dict[str, discovery_pb2.DeltaDiscoveryResponse]:
        """Subscribe to both types as ztunnel does; ACK and return the first responses."""
        await self.subscribe(ADDRESS_TYPE_URL)
        await self.subscribe(AUTHORIZATION_TYPE_URL)
        first = {}
        for _ in range(2):
            response = await self.read()
            await self.ack(response)
            first[response.type_url] = response
        return first

    async def close(self) -> None:
        await self.channel.close()


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


def names(response: discovery_pb2.DeltaDiscoveryResponse) -> list[str]:
    return [r.name for r in response.resources]


def decoded(response: discovery_pb2.DeltaDiscoveryResponse, name: str) -> Any:
    (resource,) = [r for r in response.resources if r.name == name]
    message = workload_pb2.Address()
    assert resource.resource.Unpack(message)
    return address_from_proto(message)


async def test_initial_state_one_response_per_type(probe: Probe, plane: ControlPlane) -> None:
    first = await probe.synced()
    addresses = first[ADDRESS_TYPE_URL]
    snapshot = plane.snapshot
    assert sorted(names(addresses)) == sorted([*snapshot.workloads, *snapshot.services])
    assert all(r.version and r.resource.type_url == ADDRESS_TYPE_URL for r in addresses.resources)
    assert list(addresses.removed_resources) == []
    policies = first[AUTHORIZATION_TYPE_URL]
    assert sorted(names(policies)) == [STATIC_STRICT, "shop/deny-all", "shop/orders-allow-web"]
    assert addresses.nonce != policies.nonce
    # selector policies and the synthetic PeerAuthentication policy are listed by name
    orders = next(w for w in snapshot.workloads.values() if w.name.startswith("orders-v1"))
    assert decoded(addresses, orders.uid).authorization_policies == (
        "shop/orders-allow-web",
        STATIC_STRICT,
    )
    assert decoded(addresses, PROBE).authorization_policies == (STATIC_STRICT,)


async def test_empty_mesh_still_answers_each_subscription(ca: CertificateAuthority) -> None:
    server = XdsServer(ControlPlane(ca), credentials=None)
    await server.start()
    probe = Probe(server.port)
    try:
        first = await probe.synced()
        assert [len(r.resources) for r in first.values()] == [0, 0]
    finally:
        await probe.close()
        await server.stop()


async def test_label_change_pushes_exactly_that_workload(probe: Probe, plane: ControlPlane) -> None:
    first = await probe.synced()
    before = {r.name: r.version for r in first[ADDRESS_TYPE_URL].resources}
    plane.label("Pod", "shop", "probe", "tier", "debug")
    push = await probe.read()
    assert (push.type_url, names(push), list(push.removed_resources)) == (
        ADDRESS_TYPE_URL,
        [PROBE],
        [],
    )
    assert push.resources[0].version != before[PROBE]
    assert dict(decoded(push, PROBE).labels)["tier"] == "debug"


async def test_removal(probe: Probe, plane: ControlPlane) -> None:
    await probe.synced()
    plane.update(without(plane.config, Ref("Pod", "shop", "probe")))
    push = await probe.read()
    assert (push.type_url, names(push), list(push.removed_resources)) == (
        ADDRESS_TYPE_URL,
        [],
        [PROBE],
    )


async def test_order_within_a_push_addresses_first_removals_last(
    probe: Probe, plane: ControlPlane
) -> None:
    await probe.synced()
    # a new policy and what it selects: Address upserts, then the Authorization
    plane.update(config(ALLOW_PROBE))
    pushed = [await probe.read(), await probe.read()]
    assert [p.type_url for p in pushed] == [ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL]
    web = next(n for n in names(pushed[0]) if "/web-" in n)
    assert names(pushed[0]) == [web]  # only the workload the policy selects changed
    assert "shop/web-allow-probe" in decoded(pushed[0], web).authorization_policies
    assert names(pushed[1]) == ["shop/web-allow-probe"]
    # PeerAuthentication and the probe pod removed: workloads stop listing the synthetic
    # policy, then the policy goes, then the pod
    gone = without(
        config(ALLOW_PROBE),
        Ref("PeerAuthentication", "istio-system", "default"),
        Ref("Pod", "shop", "probe"),
    )
    plane.update(gone)
    pushed = [await probe.read() for _ in range(3)]
    assert [p.type_url for p in pushed] == [
        ADDRESS_TYPE_URL,
        AUTHORIZATION_TYPE_URL,
        ADDRESS_TYPE_URL,
    ]
    assert list(pushed[0].removed_resources) == [] and PROBE not in names(pushed[0])
    assert len(pushed[0].resources) == len(plane.snapshot.workloads)
    assert (names(pushed[1]), list(pushed[1].removed_resources)) == ([], [STATIC_STRICT])
    assert (names(pushed[2]), list(pushed[2].removed_resources)) == ([], [PROBE])


async def test_nack_is_logged_and_not_resent(
    probe: Probe, plane: ControlPlane, server: XdsServer, caplog: pytest.LogCaptureFixture
) -> None:
    await probe.synced()
    plane.label("Pod", "shop", "probe", "tier", "debug")
    rejected = await probe.read()
    nacked = asyncio.Event()
    server.observer = NackWatcher(nacked)
    with caplog.at_level(logging.WARNING, logger="ambient.xds"):
        await probe.ack(rejected, error="Kubernetes//Pod/shop/probe: no thanks")
        # The server has taken the NACK (not only has it been written: a change made
        # before the server read it would race it), then a later change is still pushed
        # and the rejected version is not sent again.
        await asyncio.wait_for(nacked.wait(), TIMEOUT)
        web = next(w for w in plane.snapshot.workloads.values() if w.name.startswith("web-"))
        plane.label("Pod", "shop", web.name, "tier", "front")
        push = await probe.read()
    assert names(push) == [web.uid]
    assert server.nacks == 1
    (record,) = [r for r in caplog.records if "NACK" in r.getMessage()]
    message = record.getMessage()
    assert "node-1" in message and rejected.nonce in message and "no thanks" in message


class NackWatcher:
    """An ``XdsObserver`` that signals the first NACK."""

    def __init__(self, nacked: asyncio.Event) -> None:
        self.nacked = nacked

    def xds_rejected(self, type_url: str) -> None:
        self.nacked.set()

    def xds_pushed(self, type_url: str, seconds: float) -> None:
        pass


async def test_reconnect_sends_only_what_differs(server: XdsServer, plane: ControlPlane) -> None:
    first = Probe(server.port)
    versions = {
        t: {r.name: r.version for r in response.resources}
        for t, response in (await first.synced()).items()
    }
    await first.close()
    plane.label("Pod", "shop", "probe", "tier", "debug")
    web = next(w for w in plane.snapshot.workloads.values() if w.name.startswith("web-"))
    plane.update(without(plane.config, Ref("Deployment", "shop", "web")))
    again = Probe(server.port)
    try:
        await again.subscribe(ADDRESS_TYPE_URL, versions[ADDRESS_TYPE_URL])
        await again.subscribe(AUTHORIZATION_TYPE_URL, versions[AUTHORIZATION_TYPE_URL])
        addresses, policies = await again.read(), await again.read()
        assert (names(addresses), list(addresses.removed_resources)) == ([PROBE], [web.uid])
        assert (policies.type_url, names(policies)) == (AUTHORIZATION_TYPE_URL, [])
    finally:
        await again.close()


async def test_reconnect_without_versions_gets_everything(
    server: XdsServer, plane: ControlPlane
) -> None:
    """ztunnel lists what it has with empty versions: resend all, remove what is gone."""
    probe = Probe(server.port)
    try:
        known = {name: "" for name in plane.snapshot.workloads} | {"Kubernetes//Pod/shop/gone": ""}
        await probe.subscribe(ADDRESS_TYPE_URL, known)
        response = await probe.read()
        assert len(response.resources) == len(plane.snapshot.workloads) + len(
            plane.snapshot.services
        )
        assert list(response.removed_resources) == ["Kubernetes//Pod/shop/gone"]
    finally:
        await probe.close()


async def test_two_clients(server: XdsServer, plane: ControlPlane) -> None:
    probes = [Probe(server.port, "node-1"), Probe(server.port, "node-2")]
    try:
        firsts = [await p.synced() for p in probes]
        assert names(firsts[0][ADDRESS_TYPE_URL]) == names(firsts[1][ADDRESS_TYPE_URL])
        assert server.nodes == ["node-1", "node-2"]
        plane.label("Pod", "shop", "probe", "tier", "debug")
        for p in probes:
            assert names(await p.read()) == [PROBE]
    finally:
        for p in probes:
            await p.close()


async def test_unknown_type_and_specific_names_are_warned_about(
    probe: Probe, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="ambient.xds"):
        await probe.subscribe("type.googleapis.com/envoy.config.cluster.v3.Cluster")
        await probe.call.write(
            discovery_pb2.DeltaDiscoveryRequest(
                type_url=ADDRESS_TYPE_URL, resource_names_subscribe=[PROBE]
            )
        )
        response = await probe.read()  # the Address subscription, served as a wildcard
    assert response.type_url == ADDRESS_TYPE_URL and len(response.resources) > 1
    text = caplog.text
    assert "envoy.config.cluster.v3.Cluster" in text and "not served" in text
    assert "only wildcard subscriptions are served" in text


async def test_first_request_needs_a_node(probe: Probe) -> None:
    await probe.subscribe(ADDRESS_TYPE_URL, node=False)
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await asyncio.wait_for(probe.call.read(), TIMEOUT)
    assert failed.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "node.id" in (failed.value.details() or "")


async def test_node_authorizer_refuses(plane: ControlPlane) -> None:
    def only_node_1(_context: Any, node: str) -> None:
        if node != "node-1":
            raise NotAuthorized(f"this peer may not act for {node}")

    server = XdsServer(plane, credentials=None, authorize_node=only_node_1)
    await server.start()
    probe = Probe(server.port, "node-2")
    try:
        await probe.subscribe(ADDRESS_TYPE_URL)
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await asyncio.wait_for(probe.call.read(), TIMEOUT)
        assert failed.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "may not act for node-2" in (failed.value.details() or "")
    finally:
        await probe.close()
        await server.stop()


async def test_stop_ends_streams_cleanly(server: XdsServer, probe: Probe) -> None:
    await probe.synced()
    await server.stop()
    assert await asyncio.wait_for(probe.call.read(), TIMEOUT) is grpc.aio.EOF
    assert await probe.call.code() is grpc.StatusCode.OK
    assert server.nodes == []


async def test_a_second_server_cannot_share_the_port(
    server: XdsServer, plane: ControlPlane
) -> None:
    """gRPC binds with SO_REUSEPORT by default: two control planes (or two test runs given
    the same ephemeral port) would silently split one port's connections."""
    second = XdsServer(plane, credentials=None)
    with pytest.raises(OSError, match="cannot listen"):
        await second.start(f"127.0.0.1:{server.port}")
    await second.stop(grace=0)
