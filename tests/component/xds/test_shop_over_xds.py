"""The shop with Section 4's policies, to a ztunnel state over xDS and in-process: same mesh,
same verdicts, and the same after every change.

A ``ControlPlane`` and an ``XdsServer`` on 127.0.0.1; one ``ProxyState`` fed by an
``XdsClient`` (policies attached by name, PeerAuthentication as synthetic DENYs), one fed
by the plane's subscription as the local mesh does. Verdicts come from the ztunnel's own
``authorize``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from ambient import authz
from ambient.config import ConfigSet, load_paths
from ambient.config.configset import Ref
from ambient.controlplane import ControlPlane
from ambient.state.proxy import ProxyState
from ambient.state.workload import Workload
from ambient.xds.client import XdsClient
from ambient.xds.server import XdsServer
from ambient.ztunnel.authorization import InboundConnection, Verdict, authorize
from tests.pki import make_ca

ROOT = Path(__file__).resolve().parents[3]
SHOP = ROOT / "examples/shop/shop.yaml"
SECTION4 = ROOT / "examples/policies/section4-strict-deny-all.yaml"
STATIC_STRICT = "istio-system/istio_converted_static_strict"
TIMEOUT = 5.0
PORTS = (8080, 15008, 9999)


async def until(state: ProxyState, check: Callable[[], bool]) -> None:
    """Wait (bounded) until ``check()`` holds after some push to ``state``."""
    changed = asyncio.Event()
    state.on_change(lambda _state: changed.set())
    async with asyncio.timeout(TIMEOUT):
        while not check():
            changed.clear()
            await changed.wait()


async def feed(plane: ControlPlane, state: ProxyState) -> None:
    """In-process, as ``ambient.local.mesh`` feeds a ztunnel."""
    subscription = plane.subscribe(state.node)
    try:
        async for delta in subscription:
            state.apply(
                delta.upserted, delta.removed, delta.policies_upserted, delta.policies_removed
            )
    finally:
        subscription.close()


@dataclass
class Mesh:
    plane: ControlPlane
    server: XdsServer
    local: ProxyState
    remote: ProxyState
    client: XdsClient

    def pod(self, prefix: str) -> Workload:
        return next(
            w for _, w in sorted(self.plane.snapshot.workloads.items()) if w.name.startswith(prefix)
        )

    def verdicts(
        self, src: Workload, dst: Workload, port: int, *, mtls: bool
    ) -> tuple[Verdict, Verdict]:
        """(in-process, over xDS) verdicts on ``src`` -> ``dst:port``."""
        out = []
        for state in (self.local, self.remote):
            destination = state.workloads[dst.uid]
            conn = InboundConnection(
                str(src.identity) if mtls else None,
                src.addresses[0],
                destination,
                dst.addresses[0],
                port,
            )
            out.append(authorize(state, conn))
        return out[0], out[1]

    def assert_same_decisions(self) -> int:
        """Every pair, with and without mTLS, on every port; returns how many were compared."""
        compared = 0
        workloads = list(self.plane.snapshot.workloads.values())
        for dst in workloads:
            target = authz.Workload(dst.namespace, dst.labels)
            for src in workloads:
                for port in PORTS:
                    for identity in (str(src.identity), None):
                        conn = authz.Connection(identity, src.addresses[0], dst.addresses[0], port)
                        local = authz.decide(self.local.policies, target, conn)
                        assert authz.decide(self.remote.policies, target, conn) == local, (
                            src.name,
                            dst.name,
                            port,
                            identity,
                        )
                        compared += 1
        return compared

    async def settle(self) -> None:
        """Wait until both states hold the plane's current policies."""
        snapshot = self.plane.snapshot
        local_keys = {*snapshot.authorizations, *snapshot.peer_authentications}
        remote_keys = set(snapshot.authorizations) | (
            {STATIC_STRICT} if snapshot.peer_authentications else set()
        )
        await until(self.local, lambda: _keys(self.local) == local_keys)
        await until(self.remote, lambda: _keys(self.remote) == remote_keys)


def _keys(state: ProxyState) -> set[str]:
    return {p.key for p in state.policies.authorizations()} | {
        p.key for p in state.policies.peer_authentications()
    }


def without(cfg: ConfigSet, *refs: Ref) -> ConfigSet:
    return ConfigSet(
        objects={r: o for r, o in cfg.objects.items() if r not in refs},
        origins={r: o for r, o in cfg.origins.items() if r not in refs},
    )


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    plane = ControlPlane(make_ca(tmp_path), config=load_paths([SHOP, SECTION4]))
    server = XdsServer(plane, credentials=None)
    port = await server.start("127.0.0.1:0")
    local, remote = ProxyState("node-2"), ProxyState("node-2")
    feeder = asyncio.ensure_future(feed(plane, local))
    client = XdsClient(f"127.0.0.1:{port}", "node-2", remote, credentials=None, backoff=(0.02, 0.1))
    client.start()
    try:
        await asyncio.wait_for(client.synced.wait(), TIMEOUT)
        mesh = Mesh(plane, server, local, remote, client)
        await mesh.settle()
        yield mesh
    finally:
        await client.close()
        await server.stop()
        plane.close()
        await asyncio.wait_for(feeder, TIMEOUT)


async def test_same_workloads_and_services_as_the_plane(mesh: Mesh) -> None:
    snapshot = mesh.plane.snapshot
    # over xDS each workload also lists the policies that apply to it by name
    stripped = {
        uid: dataclasses.replace(w, authorization_policies=())
        for uid, w in mesh.remote.workloads.items()
    }
    assert stripped == dict(snapshot.workloads) == mesh.local.workloads
    assert mesh.remote.services == dict(snapshot.services) == mesh.local.services
    assert [w.uid for w in mesh.remote.local_workloads()] == [
        w.uid for w in mesh.local.local_workloads()
    ]
    orders = mesh.pod("orders-v1")
    assert mesh.remote.workloads[orders.uid].authorization_policies == (
        "shop/orders-allow-web",
        STATIC_STRICT,
    )
    assert mesh.client.connected and mesh.server.nodes == ["node-2"]


async def test_section4_verdict_table(mesh: Mesh) -> None:
    web, probe, orders = mesh.pod("web-"), mesh.pod("probe"), mesh.pod("orders-v2")
    table = [
        (web, orders, True, True, "allowed by ALLOW policy shop/orders-allow-web"),
        (probe, orders, True, False, "no ALLOW policy matched"),
        (web, orders, False, False, "plaintext refused: PeerAuthentication mTLS STRICT"),
        (web, probe, True, False, "no ALLOW policy matched"),  # deny-all
        (probe, web, False, False, "plaintext refused: PeerAuthentication mTLS STRICT"),
    ]
    for src, dst, mtls, allowed, reason in table:
        local, remote = mesh.verdicts(src, dst, 8080, mtls=mtls)
        assert local == remote == Verdict(allowed, reason), (src.name, dst.name, mtls)
    assert mesh.assert_same_decisions() == len(mesh.plane.snapshot.workloads) ** 2 * 6


async def test_verdicts_follow_changes(mesh: Mesh) -> None:
    web, orders = mesh.pod("web-"), mesh.pod("orders-v1")
    # a label change moves one pod out of orders-allow-web's selector
    mesh.plane.label("Pod", "shop", orders.name, "app", "legacy")
    await until(mesh.remote, lambda: "shop/orders-allow-web" not in _listed(mesh, orders))
    await until(mesh.local, lambda: mesh.local.workloads[orders.uid].labels["app"] == "legacy")
    assert (
        mesh.verdicts(web, orders, 8080, mtls=True)
        == (Verdict(False, "no ALLOW policy matched"),) * 2
    )
    mesh.assert_same_decisions()
    # no PeerAuthentication: plaintext is no longer refused as such
    config = without(mesh.plane.config, Ref("PeerAuthentication", "istio-system", "default"))
    mesh.plane.update(config)
    await mesh.settle()
    assert STATIC_STRICT not in _listed(mesh, web)
    mesh.assert_same_decisions()
    # no policies at all: everything allowed, in both
    mesh.plane.update(
        without(
            config,
            Ref("AuthorizationPolicy", "shop", "deny-all"),
            Ref("AuthorizationPolicy", "shop", "orders-allow-web"),
        )
    )
    await mesh.settle()
    probe = mesh.pod("probe")
    assert (
        mesh.verdicts(probe, web, 8080, mtls=False)
        == (Verdict(True, "no ALLOW policy applies"),) * 2
    )
    mesh.assert_same_decisions()
    # and back to Section 4
    mesh.plane.update(load_paths([SHOP, SECTION4]))
    await mesh.settle()
    assert mesh.verdicts(web, mesh.pod("orders-v2"), 8080, mtls=False)[1].allowed is False
    mesh.assert_same_decisions()


def _listed(mesh: Mesh, workload: Workload) -> tuple[str, ...]:
    return mesh.remote.workloads[workload.uid].authorization_policies


async def test_two_ztunnels(mesh: Mesh) -> None:
    other = ProxyState("node-1")
    client = XdsClient(
        f"127.0.0.1:{mesh.server.port}", "node-1", other, credentials=None, backoff=(0.02, 0.1)
    )
    async with client:
        await asyncio.wait_for(client.synced.wait(), TIMEOUT)
        assert other.workloads == mesh.remote.workloads
        assert sorted(mesh.server.nodes) == ["node-1", "node-2"]
        assert {w.name for w in other.local_workloads()} != {
            w.name for w in mesh.remote.local_workloads()
        }
        mesh.plane.label("Pod", "shop", "probe", "tier", "debug")
        probe = mesh.pod("probe")

        def tier(state: ProxyState) -> Callable[[], bool]:
            return lambda: state.workloads[probe.uid].labels.get("tier") == "debug"

        for state in (other, mesh.remote):
            await until(state, tier(state))
