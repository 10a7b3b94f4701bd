"""ControlPlane: updates, subscriptions, labels, node-bound certificate signing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ambient.config import ConfigSet, Namespace
from ambient.controlplane import (
    AddressAllocator,
    AddressConflict,
    ControlPlane,
    Delta,
    MeshSource,
    NotAuthorized,
    NotFound,
    SubscriptionLike,
)
from ambient.identity import CertificateAuthority, SpiffeId, generate_key_and_csr, load_pem_chain
from ambient.identity.certs import spiffe_ids_in_certificate
from ambient.state.workload import Service, TunnelProtocol, Workload
from tests.unit.controlplane.manifests import (
    deployment,
    load,
    namespace,
    pod,
    service,
    service_account,
    workload_entry,
)

HBONE, NONE = TunnelProtocol.HBONE, TunnelProtocol.NONE


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.generate()


def shop(*extra: str) -> ConfigSet:
    return load(
        namespace("shop"),
        service_account("web", "shop"),
        deployment(
            "web",
            "shop",
            replicas=2,
            labels="{app: web}",
            sa="web",
            annotations='{ambient.io/nodes: "node-1,node-2"}',
        ),
        service("web", "shop", selector="{app: web}"),
        pod("probe", "shop"),
        *extra,
    )


def names(delta: Delta) -> list[str]:
    return [a.key if isinstance(a, Service) else a.uid for a in delta.upserted]


async def next_delta(sub: SubscriptionLike) -> Delta:
    return await asyncio.wait_for(anext(sub), 1)


def web_pod(plane: ControlPlane, node: str) -> Workload:
    (found,) = [w for w in plane.snapshot.workloads_on(node) if w.workload_name == "web"]
    return found


# -- updates and subscriptions ------------------------------------------------------------------


async def test_first_delta_is_full_then_incremental(ca: CertificateAuthority) -> None:
    plane = ControlPlane(ca, config=shop())
    source: MeshSource = plane  # the interface a remote (xDS) control plane will share
    sub = source.subscribe("node-1")
    first = await next_delta(sub)
    web = sorted(w.uid for w in plane.snapshot.workloads.values() if w.workload_name == "web")
    assert names(first) == [
        "shop/web.shop.svc.cluster.local",
        "Kubernetes//Pod/shop/probe",
        *web,
    ]
    assert first.removed == ()

    delta = plane.update(load(namespace("shop"), pod("probe", "shop")))
    assert delta.removed == (*web, "shop/web.shop.svc.cluster.local")
    assert await next_delta(sub) == delta


async def test_two_subscribers_and_coalescing(ca: CertificateAuthority) -> None:
    plane = ControlPlane(ca)
    early = plane.subscribe("node-1")
    assert await next_delta(early) == Delta()  # the (empty) full state
    plane.update(load(pod("a")))
    plane.update(load(pod("a"), pod("b")))
    late = plane.subscribe(None)
    # The early subscriber missed one push: it gets one delta with both pods.
    assert names(await next_delta(early)) == [
        "Kubernetes//Pod/default/a",
        "Kubernetes//Pod/default/b",
    ]
    assert names(await next_delta(late)) == [
        "Kubernetes//Pod/default/a",
        "Kubernetes//Pod/default/b",
    ]
    assert plane.update(load(pod("a"), pod("b"))) == Delta()  # no change, no push
    plane.update(load(pod("b")))
    assert (await next_delta(early)).removed == ("Kubernetes//Pod/default/a",)
    assert (await next_delta(late)).removed == ("Kubernetes//Pod/default/a",)


async def test_waiting_reader_is_woken_and_unsubscribe_ends_iteration(
    ca: CertificateAuthority,
) -> None:
    plane = ControlPlane(ca)
    sub = plane.subscribe("node-1")
    await next_delta(sub)
    waiter = asyncio.ensure_future(next_delta(sub))
    await asyncio.sleep(0)
    plane.update(load(pod("a")))
    assert names(await waiter) == ["Kubernetes//Pod/default/a"]

    ended = asyncio.ensure_future(anext(sub, None))
    await asyncio.sleep(0)
    plane.unsubscribe(sub)
    assert await asyncio.wait_for(ended, 1) is None
    assert sub.closed and plane.subscriptions == ()
    plane.update(load())
    assert [d async for d in sub] == []


async def test_failed_update_changes_nothing(ca: CertificateAuthority) -> None:
    plane = ControlPlane(ca, config=load(pod("a")))
    before = plane.snapshot
    sub = plane.subscribe()
    await next_delta(sub)
    with pytest.raises(AddressConflict):
        plane.update(load(pod("a", ip="10.0.0.1"), workload_entry("vm", "10.0.0.1")))
    assert plane.snapshot is before and len(plane.config) == 1


REQUEST_AUTHN = """\
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: "", name: web}]
  jwtRules: [{issuer: https://issuer.example, jwksUri: https://issuer.example/keys}]
"""


async def test_config_listeners_see_changes_outside_the_index(ca: CertificateAuthority) -> None:
    """A waypoint-only object changes no address but travels as L7 in the Delta and
    reaches ``on_config`` (the one-process mesh's waypoints)."""
    plane = ControlPlane(ca, config=shop())
    seen: list[ConfigSet] = []
    plane.on_config(seen.append)
    sub = plane.subscribe()
    await next_delta(sub)
    with_authn = shop(REQUEST_AUTHN)
    delta = plane.update(with_authn)
    assert [name for name, _ in delta.l7_upserted] == ["RequestAuthentication/shop/jwt"]
    assert (delta.upserted, delta.removed) == ((), ())
    assert seen == [with_authn] and plane.config is with_authn
    pushed = await asyncio.wait_for(anext(sub), 1)
    assert [name for name, _ in pushed.l7_upserted] == ["RequestAuthentication/shop/jwt"]
    assert plane.update(shop()).l7_removed == ("RequestAuthentication/shop/jwt",)
    assert [len(c.by_kind("RequestAuthentication")) for c in seen] == [1, 0]
    with pytest.raises(AddressConflict):  # a refused update is not a change
        plane.update(load(pod("a", ip="10.0.0.1"), workload_entry("vm", "10.0.0.1")))
    assert len(seen) == 2


async def test_addresses_survive_a_restart(ca: CertificateAuthority, tmp_path: Path) -> None:
    first = ControlPlane(ca, AddressAllocator.in_state_dir(tmp_path))
    first.update(load(pod("b")))
    first.update(shop(pod("a", "shop"), pod("b")))
    again = ControlPlane(ca, AddressAllocator.in_state_dir(tmp_path))
    assert again.snapshot.workloads == {}
    again.update(shop(pod("a", "shop"), pod("b")))
    assert again.snapshot == first.snapshot
    b = again.snapshot.workloads["Kubernetes//Pod/default/b"]
    assert str(b.addresses[0]) == "127.10.0.1"


# -- labels -------------------------------------------------------------------------------------


async def test_label_namespace_creates_implicit_namespace(ca: CertificateAuthority) -> None:
    plane = ControlPlane(ca, config=load(pod("a", "apps")))
    sub = plane.subscribe()
    await next_delta(sub)
    delta = plane.label("namespace", "", "apps", "istio.io/dataplane-mode", "ambient")
    assert names(delta) == ["Kubernetes//Pod/apps/a"]
    assert plane.snapshot.workloads["Kubernetes//Pod/apps/a"].tunnel_protocol is HBONE
    ns = plane.config.get("Namespace", "", "apps")
    assert isinstance(ns, Namespace) and ns.meta.labels["istio.io/dataplane-mode"] == "ambient"
    assert await next_delta(sub) == delta
    delta = plane.label("ns", "ignored", "apps", "istio.io/dataplane-mode", None)
    assert plane.snapshot.workloads["Kubernetes//Pod/apps/a"].tunnel_protocol is NONE


async def test_label_declared_pod(ca: CertificateAuthority) -> None:
    plane = ControlPlane(ca, config=load(namespace("shop", "ambient"), pod("a", "shop")))
    delta = plane.label("pod", "shop", "a", "istio.io/dataplane-mode", "none")
    assert names(delta) == ["Kubernetes//Pod/shop/a"]
    declared = plane.config.get("Pod", "shop", "a")
    assert declared is not None and declared.meta.labels == {"istio.io/dataplane-mode": "none"}
    assert plane.pod_labels == {}
    assert plane.label("po", "shop", "a", "absent", None) == Delta()


async def test_label_deployment_pod_is_an_override(ca: CertificateAuthority) -> None:
    plane = ControlPlane(ca, config=shop())
    target = web_pod(plane, "node-2")
    delta = plane.label("pod", "shop", target.name, "istio.io/dataplane-mode", "ambient")
    assert names(delta) == [target.uid]
    assert plane.snapshot.workloads[target.uid].tunnel_protocol is HBONE
    assert web_pod(plane, "node-1").tunnel_protocol is NONE
    # The override survives unrelated updates, and vanishes with the pod.
    assert names(plane.update(shop(pod("new", "shop")))) == ["Kubernetes//Pod/shop/new"]
    assert plane.snapshot.workloads[target.uid].tunnel_protocol is HBONE
    plane.update(load(namespace("shop")))
    assert plane.pod_labels == {}


@pytest.mark.parametrize(
    ("kind", "ns", "name", "key", "value", "error", "message"),
    [
        ("pod", "shop", "nope", "a", "b", NotFound, "Pod shop/nope not found"),
        ("namespace", "", "nope", "a", "b", NotFound, "Namespace nope not found"),
        ("svc", "shop", "nope", "a", "b", NotFound, "Service shop/nope not found"),
        ("pod", "shop", "probe", "bad key!", "b", ValueError, "invalid key 'bad key!'"),
        ("ns", "", "shop", "k", "-bad-", ValueError, "invalid label value '-bad-'"),
    ],
)
def test_label_errors(
    ca: CertificateAuthority,
    kind: str,
    ns: str,
    name: str,
    key: str,
    value: str,
    error: type[Exception],
    message: str,
) -> None:
    plane = ControlPlane(ca, config=shop())
    with pytest.raises(error, match=message):
        plane.label(kind, ns, name, key, value)


# -- node-bound signing -------------------------------------------------------------------------

WEB = SpiffeId.workload("shop", "web")


@pytest.mark.parametrize("node", ["node-1", "node-2"])
async def test_sign_for_workload_on_node(ca: CertificateAuthority, node: str) -> None:
    plane = ControlPlane(ca, config=shop())
    _, csr = generate_key_and_csr(WEB)
    chain, roots = await plane.sign_certificate(node, WEB, csr)
    assert spiffe_ids_in_certificate(load_pem_chain(chain)[0]) == [WEB.uri]
    assert roots == ca.roots_pem()


@pytest.mark.parametrize(
    ("node", "identity", "reason"),
    [
        ("node-3", WEB, "(it runs on node-1, node-2)"),
        ("node-1", SpiffeId.workload("shop", "orders"), "(no pod has that identity)"),
        ("node-1", SpiffeId.workload("shop", "web", "other.domain"), "(no pod has that identity)"),
    ],
)
async def test_sign_refused(
    ca: CertificateAuthority, node: str, identity: SpiffeId, reason: str
) -> None:
    plane = ControlPlane(ca, config=shop())
    _, csr = generate_key_and_csr(identity)
    with pytest.raises(NotAuthorized) as err:
        await plane.sign_certificate(node, identity, csr)
    assert isinstance(err.value, PermissionError)
    assert str(err.value) == (
        f"node {node!r} may not obtain a certificate for {identity}: no pod with that "
        f"identity is scheduled on {node!r} {reason}"
    )


async def test_workload_entries_do_not_authorize(ca: CertificateAuthority) -> None:
    plane = ControlPlane(
        ca,
        config=load(
            """
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm, namespace: default}
spec: {address: 10.0.0.1, labels: {ambient.io/node: node-1}}
"""
        ),
    )
    identity = SpiffeId.workload("default", "default")
    with pytest.raises(NotAuthorized):
        await plane.sign_certificate("node-1", identity, generate_key_and_csr(identity)[1])
