"""XdsClient against a scripted ADS server (requests recorded, responses sent by the test)
and against XdsServer: ztunnel's requests, NACKs, atomic application, reconnects."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2

from ambient.authz.model import Action, Authorization, Scope
from ambient.config import load_text
from ambient.controlplane import ControlPlane
from ambient.identity import CertificateAuthority
from ambient.state.proxy import ProxyState
from ambient.state.workload import TunnelProtocol, Workload
from ambient.xds.attached import ByNamePolicyStore
from ambient.xds.client import XdsClient
from ambient.xds.codec import (
    ADDRESS_TYPE_URL,
    AUTHORIZATION_TYPE_URL,
    authorization_to_proto,
    workload_to_proto,
)
from ambient.xds.proto import discovery_pb2
from ambient.xds.published import resource_version
from ambient.xds.server import SERVICE, XdsServer

ROOT = Path(__file__).resolve().parents[3]
TIMEOUT = 5.0
FAST = (0.02, 0.1)


def workload(name: str, ip: str) -> Workload:
    return Workload(
        uid=f"Kubernetes//Pod/shop/{name}",
        name=name,
        namespace="shop",
        addresses=(ipaddress.IPv4Address(ip),),
        service_account=name,
        node="node-1",
        tunnel_protocol=TunnelProtocol.HBONE,
    )


WEB, ORDERS = workload("web", "10.0.0.1"), workload("orders", "10.0.0.2")
DENY = Authorization("deny-all", "shop", Scope.NAMESPACE, Action.DENY)


def resource(name: str, message: Any) -> discovery_pb2.Resource:
    packed = any_pb2.Any()
    packed.Pack(message, deterministic=True)
    return discovery_pb2.Resource(name=name, version=resource_version(packed), resource=packed)


def addresses(
    *workloads: Workload, removed: tuple[str, ...] = ()
) -> discovery_pb2.DeltaDiscoveryResponse:
    return discovery_pb2.DeltaDiscoveryResponse(
        type_url=ADDRESS_TYPE_URL,
        resources=[resource(w.uid, workload_to_proto(w)) for w in workloads],
        removed_resources=removed,
    )


def policies(*policies: Authorization) -> discovery_pb2.DeltaDiscoveryResponse:
    return discovery_pb2.DeltaDiscoveryResponse(
        type_url=AUTHORIZATION_TYPE_URL,
        resources=[resource(p.key, authorization_to_proto(p)) for p in policies],
    )


class ScriptedAds:
    """A delta ADS server that records requests and sends what the test queues.

    Queue None to end the current stream (the client then reconnects).
    """

    def __init__(self) -> None:
        self.requests: asyncio.Queue[discovery_pb2.DeltaDiscoveryRequest] = asyncio.Queue()
        self.responses: asyncio.Queue[discovery_pb2.DeltaDiscoveryResponse | None] = asyncio.Queue()
        self.streams = 0
        self._nonce = 0
        self._server: Any = None
        self.port = 0

    async def start(self) -> None:
        handler = grpc.stream_stream_rpc_method_handler(
            self._serve,
            request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
            response_serializer=discovery_pb2.DeltaDiscoveryResponse.SerializeToString,
        )
        self._server = grpc.aio.server()
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {"DeltaAggregatedResources": handler}),)
        )
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()

    async def stop(self) -> None:
        await self._server.stop(0)

    async def _serve(self, requests: Any, context: Any) -> None:
        self.streams += 1

        async def pump() -> None:
            async for request in requests:
                await self.requests.put(request)

        reader = asyncio.ensure_future(pump())
        try:
            while (response := await self.responses.get()) is not None:
                self._nonce += 1
                response.nonce = str(self._nonce)
                await context.write(response)
        finally:
            reader.cancel()

    async def send(
        self, response: discovery_pb2.DeltaDiscoveryResponse
    ) -> discovery_pb2.DeltaDiscoveryRequest:
        """Send ``response``; returns the client's ACK or NACK of it."""
        await self.responses.put(response)
        reply = await self.request()
        assert reply.response_nonce == str(self._nonce), reply
        return reply

    async def request(self) -> discovery_pb2.DeltaDiscoveryRequest:
        return await asyncio.wait_for(self.requests.get(), TIMEOUT)


@pytest.fixture
async def ads() -> AsyncIterator[ScriptedAds]:
    server = ScriptedAds()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client(ads: ScriptedAds) -> AsyncIterator[XdsClient]:
    client = XdsClient(
        f"127.0.0.1:{ads.port}", "node-1", ProxyState("node-1"), credentials=None, backoff=FAST
    )
    client.start()
    yield client
    await client.close()


async def sync(ads: ScriptedAds, client: XdsClient) -> None:
    for _ in range(2):  # the two subscriptions
        await ads.request()
    await ads.send(addresses(WEB, ORDERS))
    await ads.send(policies(DENY))
    await asyncio.wait_for(client.synced.wait(), TIMEOUT)


async def until(state: ProxyState, check: Callable[[], bool]) -> None:
    """Wait (bounded) until ``check()`` holds after some push to ``state``."""
    changed = asyncio.Event()
    state.on_change(lambda _state: changed.set())
    async with asyncio.timeout(TIMEOUT):
        while not check():
            changed.clear()
            await changed.wait()


async def test_subscribes_like_ztunnel(ads: ScriptedAds, client: XdsClient) -> None:
    first, second = await ads.request(), await ads.request()
    assert [first.type_url, second.type_url] == [ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL]
    for request in (first, second):
        assert request.node.id == "node-1"
        assert request.node.metadata.fields["NODE_NAME"].string_value == "node-1"
        assert list(request.resource_names_subscribe) == []  # wildcard, as ztunnel
        assert dict(request.initial_resource_versions) == {}
        assert not request.response_nonce
    assert isinstance(client.state.policies, ByNamePolicyStore)


async def test_synced_once_both_types_are_applied(ads: ScriptedAds, client: XdsClient) -> None:
    await ads.request(), await ads.request()
    ack = await ads.send(addresses(WEB))
    assert not ack.HasField("error_detail") and ack.type_url == ADDRESS_TYPE_URL
    assert not client.synced.is_set() and client.connected
    await ads.send(policies())
    assert client.synced.is_set()
    assert list(client.state.workloads) == [WEB.uid]


def garbage(name: str) -> discovery_pb2.Resource:
    return discovery_pb2.Resource(
        name=name, version="1", resource=any_pb2.Any(type_url=ADDRESS_TYPE_URL, value=b"\xff\xff")
    )


def wrong_type(name: str) -> discovery_pb2.Resource:
    return resource(name, authorization_to_proto(DENY))


def misnamed(name: str) -> discovery_pb2.Resource:
    return resource(name, workload_to_proto(WEB))


def bad_ip(name: str) -> discovery_pb2.Resource:
    message = workload_to_proto(workload("bad", "10.0.0.9"))
    message.workload.addresses[0] = b"\x01\x02\x03"
    return resource(name, message)


@pytest.mark.parametrize(
    ("broken", "reason"),
    [
        (garbage, "malformed istio.workload.Address"),
        (wrong_type, "carries type.googleapis.com/istio.security.Authorization"),
        (misnamed, "it describes 'Kubernetes//Pod/shop/web'"),
        (bad_ip, "3 bytes is not an IPv4 or IPv6 address"),
    ],
    ids=["malformed-any", "wrong-type", "misnamed", "bad-ip"],
)
async def test_bad_resource_nacks_whole_response(
    ads: ScriptedAds,
    client: XdsClient,
    caplog: pytest.LogCaptureFixture,
    broken: Callable[[str], discovery_pb2.Resource],
    reason: str,
) -> None:
    await sync(ads, client)
    before = dict(client.state.workloads)
    versions = client.versions
    push = addresses(workload("new", "10.0.0.3"), removed=(WEB.uid,))
    push.resources.append(broken("Kubernetes//Pod/shop/bad"))
    with caplog.at_level(logging.WARNING, logger="ambient.xds"):
        nack = await ads.send(push)
    detail = nack.error_detail.message
    assert nack.HasField("error_detail") and nack.type_url == ADDRESS_TYPE_URL
    assert detail.startswith("Kubernetes//Pod/shop/bad: ") and reason in detail, detail
    assert client.state.workloads == before and client.versions == versions  # nothing applied
    assert client.nacks == 1
    assert f"rejected istio.workload.Address push (nonce {nack.response_nonce})" in caplog.text
    assert reason in caplog.text
    # later versions are applied as usual
    ack = await ads.send(addresses(workload("new", "10.0.0.3"), removed=(WEB.uid,)))
    assert not ack.HasField("error_detail")
    assert sorted(client.state.workloads) == ["Kubernetes//Pod/shop/new", ORDERS.uid]


async def test_unknown_response_type_is_nacked(ads: ScriptedAds, client: XdsClient) -> None:
    await sync(ads, client)
    nack = await ads.send(discovery_pb2.DeltaDiscoveryResponse(type_url="type.googleapis.com/x.Y"))
    assert "was not subscribed to" in nack.error_detail.message


async def test_each_response_applied_atomically(ads: ScriptedAds, client: XdsClient) -> None:
    await sync(ads, client)
    seen: list[tuple[int, int]] = []
    client.state.on_change(lambda s: seen.append((len(s.workloads), len(s.policies))))
    await ads.send(
        addresses(workload("a", "10.0.0.4"), workload("b", "10.0.0.5"), removed=(WEB.uid,))
    )
    await ads.send(
        discovery_pb2.DeltaDiscoveryResponse(
            type_url=AUTHORIZATION_TYPE_URL, removed_resources=[DENY.key]
        )
    )
    assert seen == [(3, 1), (3, 0)]


async def test_reconnect_sends_versions_and_keeps_state(
    ads: ScriptedAds, client: XdsClient, caplog: pytest.LogCaptureFixture
) -> None:
    await sync(ads, client)
    held = client.versions
    with caplog.at_level(logging.INFO, logger="ambient.xds"):
        await ads.responses.put(None)  # the server ends the stream
        first, second = await ads.request(), await ads.request()
        await ads.send(addresses())
    assert ads.streams == 2
    assert dict(first.initial_resource_versions) == held[ADDRESS_TYPE_URL]
    assert dict(second.initial_resource_versions) == held[AUTHORIZATION_TYPE_URL]
    assert set(held[ADDRESS_TYPE_URL]) == {WEB.uid, ORDERS.uid}
    assert sorted(client.state.workloads) == sorted([WEB.uid, ORDERS.uid])  # kept meanwhile
    assert caplog.text.count("control plane unreachable, keeping last config") == 1
    assert "reachable again" in caplog.text


async def test_subscription_yields_applied_deltas(ads: ScriptedAds, client: XdsClient) -> None:
    subscription = client.subscribe()
    pending = asyncio.ensure_future(anext(subscription))
    await sync(ads, client)
    first = await asyncio.wait_for(pending, TIMEOUT)
    assert sorted(w.uid for w in first.upserted if isinstance(w, Workload)) == sorted(
        [WEB.uid, ORDERS.uid]
    )
    assert [p.key for p in first.policies_upserted] == [DENY.key]
    await ads.send(addresses(removed=(WEB.uid,)))
    delta = await asyncio.wait_for(anext(subscription), TIMEOUT)
    assert (delta.upserted, delta.removed) == ((), (WEB.uid,))
    subscription.close()
    assert await anext(subscription, None) is None


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="backoff"):
        XdsClient("127.0.0.1:1", "n", ProxyState("n"), credentials=None, backoff=(2, 1))
    with pytest.raises(ValueError, match="node"):
        XdsClient("127.0.0.1:1", "", ProxyState("n"), credentials=None)


# -- against XdsServer ----------------------------------------------------------------


async def test_outage_keeps_state_logs_once_and_catches_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shop = (ROOT / "examples/shop/shop.yaml").read_text()
    plane = ControlPlane(CertificateAuthority.generate(), config=load_text(shop, "shop.yaml"))
    server = XdsServer(plane, credentials=None)
    port = await server.start("127.0.0.1:0")
    state = ProxyState("node-1")
    client = XdsClient(f"127.0.0.1:{port}", "node-1", state, credentials=None, backoff=FAST)
    retries = asyncio.Event()
    failures: list[str] = []

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "failed again" in record.getMessage():
                failures.append(record.getMessage())
                if len(failures) >= 3:
                    retries.set()

    watch = Watch()
    logging.getLogger("ambient.xds").addHandler(watch)
    try:
        with caplog.at_level(logging.DEBUG, logger="ambient.xds"):
            client.start()
            await asyncio.wait_for(client.synced.wait(), TIMEOUT)
            held = dict(state.workloads)
            await server.stop()
            await asyncio.wait_for(retries.wait(), TIMEOUT)  # several failed attempts
            assert not client.connected
            assert state.workloads == held
            assert caplog.text.count("control plane unreachable, keeping last config") == 1
            plane.label("Pod", "shop", "probe", "tier", "debug")  # while the ztunnel is away
            server = XdsServer(plane, credentials=None)
            await server.start(f"127.0.0.1:{port}")
            probe = "Kubernetes//Pod/shop/probe"
            await until(state, lambda: state.workloads[probe].labels.get("tier") == "debug")
            assert server.nodes == ["node-1"]
        # the restarted server sent only what differed from the versions the client held
        subscribed = [
            r.args
            for r in caplog.records
            if r.getMessage().startswith("node node-1 subscribed to istio.workload.Address")
        ]
        total = len(plane.snapshot.workloads) + len(plane.snapshot.services)
        assert subscribed[-1] == ("node-1", "istio.workload.Address", 1, total - 1, 0)
    finally:
        logging.getLogger("ambient.xds").removeHandler(watch)
        await client.close()
        await server.stop()
