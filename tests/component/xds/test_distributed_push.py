"""What a real ``XdsClient`` receives from a real ``XdsServer`` when the configuration changes.

Over gRPC on loopback, as between ``ambient up``'s control plane and ztunnel processes:
pushes carry only what changed; addresses arrive before the policies that select them;
on removal the policies go before the workloads they selected; a push the client
cannot take is NACKed, reported on both sides, and none of it is applied.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ambient.config import ConfigSet, load_text
from ambient.controlplane import ControlPlane
from ambient.state.proxy import ProxyState
from ambient.state.workload import Service, Workload
from ambient.xds import published
from ambient.xds.client import XdsClient
from ambient.xds.server import XdsServer
from tests.pki import make_ca

ROOT = Path(__file__).resolve().parents[3]
SHOP = (ROOT / "examples/shop/shop.yaml").read_text()
TIMEOUT = 5.0

EXTRA = """
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: shop, labels: {{app: extra}}}}
spec:
  serviceAccountName: web
  containers: [{{name: c, command: [sleep, infinity]}}]
"""
ALLOW_EXTRA = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: extra-allow-web, namespace: shop}
spec:
  selector: {matchLabels: {app: extra}}
  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/web]}}]}]
"""
POLICY = "shop/extra-allow-web"


def uid(name: str) -> str:
    return f"Kubernetes//Pod/shop/{name}"


@dataclass
class Applied:
    """One ``ProxyState.apply`` of the client: one accepted xDS response."""

    upserted: list[str]
    removed: list[str]
    policies_upserted: list[str]
    policies_removed: list[str]


@dataclass
class Recorder:
    state: ProxyState
    applied: list[Applied] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def install(self) -> None:
        original = self.state.apply

        def apply(
            upserted: Iterable[Workload | Service],
            removed: Iterable[str],
            policies_upserted: Iterable[Any] = (),
            policies_removed: Iterable[tuple[str, str]] = (),
        ) -> None:
            upserted, removed = list(upserted), list(removed)
            policies_upserted, policies_removed = list(policies_upserted), list(policies_removed)
            self.applied.append(
                Applied(
                    [a.uid if isinstance(a, Workload) else a.key for a in upserted],
                    removed,
                    [p.key for p in policies_upserted],
                    [key for _kind, key in policies_removed],
                )
            )
            original(upserted, removed, policies_upserted, policies_removed)
            self.changed.set()

        self.state.apply = apply  # type: ignore[method-assign]

    async def until(self, count: int) -> list[Applied]:
        async with asyncio.timeout(TIMEOUT):
            while len(self.applied) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.applied


@dataclass
class Pair:
    plane: ControlPlane
    server: XdsServer
    client: XdsClient
    recorder: Recorder


def config(*extra: str) -> ConfigSet:
    return load_text("\n---\n".join([SHOP, *extra]), "shop.yaml")


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    plane = ControlPlane(make_ca(tmp_path), config=config())
    server = XdsServer(plane, credentials=None)
    port = await server.start("127.0.0.1:0")
    state = ProxyState("node-1")
    client = XdsClient(f"127.0.0.1:{port}", "node-1", state, credentials=None, backoff=(0.02, 0.1))
    client.start()
    try:
        await asyncio.wait_for(client.synced.wait(), TIMEOUT)
        recorder = Recorder(state)
        recorder.install()
        yield Pair(plane, server, client, recorder)
    finally:
        await client.close()
        await server.stop(0)
        plane.close()


async def test_a_new_workload_arrives_before_the_policy_that_selects_it(pair: Pair) -> None:
    pair.plane.update(config(EXTRA.format(name="extra-1"), ALLOW_EXTRA))
    first, second = await pair.recorder.until(2)
    # only what changed, addresses first
    assert first == Applied([uid("extra-1")], [], [], [])
    assert second == Applied([], [], [POLICY], [])
    assert pair.client.state.workloads[uid("extra-1")].authorization_policies == (POLICY,)


async def test_a_removed_workload_goes_after_the_policy_that_selected_it(pair: Pair) -> None:
    pair.plane.update(config(EXTRA.format(name="extra-1"), ALLOW_EXTRA))
    await pair.recorder.until(2)
    pair.plane.update(config())
    applied = (await pair.recorder.until(4))[2:]
    assert applied == [
        Applied([], [], [], [POLICY]),
        Applied([], [uid("extra-1")], [], []),
    ]
    assert POLICY not in {p.key for p in pair.client.state.policies.authorizations()}


async def test_a_nacked_push_is_reported_and_none_of_it_applied(
    pair: Pair, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The server encodes one of two new workloads under a wrong name (a control plane bug)."""
    listing = published._workload_listing

    def corrupt(keys: tuple[str, ...], workload: Workload) -> Any:
        message: Any = listing(keys, workload)
        if workload.name == "extra-2":
            message.workload.uid = uid("someone-else")
        return message

    monkeypatch.setattr(published, "_workload_listing", corrupt)
    before = dict(pair.client.state.workloads)
    nacked = asyncio.Event()

    class OnNack(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "xDS NACK from node" in record.getMessage():
                nacked.set()

    handler = OnNack()
    logging.getLogger("ambient.xds").addHandler(handler)
    try:
        with caplog.at_level(logging.WARNING, logger="ambient.xds"):
            pair.plane.update(config(EXTRA.format(name="extra-1"), EXTRA.format(name="extra-2")))
            await asyncio.wait_for(nacked.wait(), TIMEOUT)
    finally:
        logging.getLogger("ambient.xds").removeHandler(handler)
    assert pair.server.nacks == 1
    assert pair.client.nacks == 1
    assert pair.recorder.applied == []  # neither extra-1 nor extra-2
    assert pair.client.state.workloads == before
    server_side = [
        r.getMessage() for r in caplog.records if "xDS NACK from node node-1" in r.getMessage()
    ]
    assert len(server_side) == 1 and "someone-else" in server_side[0], server_side
    # the next change is pushed and applied as usual
    monkeypatch.setattr(published, "_workload_listing", listing)
    pair.plane.update(config(EXTRA.format(name="extra-3")))
    applied = await pair.recorder.until(1)
    assert uid("extra-3") in applied[0].upserted
    assert uid("extra-3") in pair.client.state.workloads
