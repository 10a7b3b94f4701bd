"""Identity from Kubernetes: a ztunnel's service-account token, bound to its pod, gets the
certificates of its node's pods and nothing else.

The control plane is the real process (``controlplane``: the ``istiod`` account's token,
``ambient install``'s RBAC); its CA is called over real TLS with ``CaClient.with_token``;
the tokens are real TokenRequests, requested by each ztunnel pod with its own credentials
(``ZtunnelPods``, the kubelet stand-in's part), checked by the API server's TokenReview.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from ambient.devcluster import DevCluster
from ambient.identity.certs import generate_key_and_csr, load_pem_chain, spiffe_ids_in_certificate
from ambient.identity.manager import CertificateManager
from ambient.identity.spiffe import SpiffeId
from ambient.identity.tokensource import FileTokenSource, TokenSource
from ambient.kube.api import ClusterTarget, KubeClient, KubeError, load_config
from ambient.kube.kinds import POD, SERVICE_ACCOUNT
from ambient.xds.ca_client import CaClient, CaClientError
from tests.kube.controlplane.conftest import RunningPlane
from tests.kube.controlplane.test_watch import create, pod
from tests.kube.kubelet import KubeletStandIn
from tests.kube.ztunnel_pods import ZtunnelPods, request_token, token_kubeconfig

pytestmark = [pytest.mark.slow, pytest.mark.kube]

TD = "cluster.local"


class StaticToken:
    """A ``TokenSource`` that hands out one given token (a test's forged or foreign one)."""

    def __init__(self, token: str) -> None:
        self.value = token

    async def token(self) -> str:
        return self.value

    def describe(self) -> str:
        return "a test's token"


@pytest.fixture
async def ztunnels(
    admin: KubeClient, installed: DevCluster, tmp_path: Path
) -> AsyncIterator[ZtunnelPods]:
    pods = ZtunnelPods(admin, installed.kubeconfig, tmp_path)
    yield pods
    await pods.close()


def ca(
    plane: RunningPlane, node: str, source: TokenSource, ttl: timedelta | None = None
) -> CaClient:
    roots = Path(plane.info["node_ca_root"]).read_bytes()
    return CaClient.with_token(plane.info["ca_address"], node, source, roots, ttl=ttl, timeout=10)


async def issue(client: CaClient, identity: SpiffeId) -> list[str]:
    """The SPIFFE ids of the certificate the CA issues for ``identity``."""
    _, csr = generate_key_and_csr(identity)
    chain, _ = await client.issue(identity, csr)
    return spiffe_ids_in_certificate(load_pem_chain(chain, "issued")[0])


async def refused(client: CaClient, identity: SpiffeId) -> CaClientError:
    with pytest.raises(CaClientError) as caught:
        await issue(client, identity)
    return caught.value


async def account(admin: KubeClient, namespace: str, name: str) -> None:
    meta = {"name": name, "namespace": namespace}
    await admin.create(
        SERVICE_ACCOUNT.path(namespace),
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
    )


async def two_nodes(
    admin: KubeClient, kubelet: KubeletStandIn, namespace: str, prefix: str
) -> tuple[str, str]:
    """Nodes ``<prefix>-1`` (a pod of account ``web``) and ``<prefix>-2`` (a pod of ``db``)."""
    one, two = f"{prefix}-1", f"{prefix}-2"
    await kubelet.register(one, "192.168.70.1")
    await kubelet.register(two, "192.168.70.2")
    for name in ("web", "db", "lonely"):
        await account(admin, namespace, name)
    await create(admin, pod(namespace, "web", {"app": "web"}, node=one, sa="web"))
    await create(admin, pod(namespace, "db", {"app": "db"}, node=two, sa="db"))
    await kubelet.run(namespace, "web", "10.244.70.1")
    await kubelet.run(namespace, "db", "10.244.70.2")
    return one, two


async def test_a_nodes_token_gets_only_its_pods_certificates(
    controlplane: RunningPlane,
    admin: KubeClient,
    kubelet: KubeletStandIn,
    ztunnels: ZtunnelPods,
    namespace: str,
) -> None:
    one, two = await two_nodes(admin, kubelet, namespace, "id")
    web, db = SpiffeId(TD, namespace, "web"), SpiffeId(TD, namespace, "db")
    lonely = SpiffeId(TD, namespace, "lonely")
    z1, z2 = await ztunnels.start(one), await ztunnels.start(two)
    async with ca(controlplane, one, z1.token_source()) as node1:
        assert await issue(node1, web) == [web.uri]
        other = await refused(node1, db)
        assert other.code is grpc.StatusCode.PERMISSION_DENIED
        assert (
            f"node {one} may not obtain a certificate for {db.uri}: no pod of ServiceAccount "
            f"{namespace}/db is scheduled on {one} (its pods run on {two})"
        ) in other.details
        nobody = await refused(node1, lonely)
        assert nobody.code is grpc.StatusCode.PERMISSION_DENIED
        assert (
            f"no pod of ServiceAccount {namespace}/lonely is scheduled on {one} (it has none)"
            in (nobody.details)
        )
        foreign = await refused(node1, SpiffeId("other.domain", namespace, "web"))
        assert foreign.code is grpc.StatusCode.PERMISSION_DENIED
        assert "trust domain" in foreign.details
    async with ca(controlplane, two, z2.token_source()) as node2:
        assert await issue(node2, db) == [db.uri]
        assert (await refused(node2, web)).code is grpc.StatusCode.PERMISSION_DENIED
    # Both sides log the refusal with its reason; the issue names the caller's pod.
    log = controlplane.log_text()
    assert "refused CreateCertificate" in log and f"(its pods run on {two})" in log
    assert f"issued a certificate for {web.uri} to node {one} (pod istio-system/{z1.name}" in log


async def test_tokens_that_are_not_a_nodes_are_refused(
    controlplane: RunningPlane,
    admin: KubeClient,
    kubelet: KubeletStandIn,
    ztunnels: ZtunnelPods,
    namespace: str,
) -> None:
    one, _ = await two_nodes(admin, kubelet, namespace, "bad")
    web = SpiffeId(TD, namespace, "web")
    z1 = await ztunnels.start(one)
    uid = (await admin.get(POD.path(namespace, "web")))["metadata"]["uid"]

    async def attempt(token: str) -> CaClientError:
        async with ca(controlplane, one, StaticToken(token)) as client:
            return await refused(client, web)

    # Another ServiceAccount's token, bound to its pod, audience istio-ca: not a node.
    workload = await request_token(
        admin, pod="web", uid=uid, namespace=namespace, account="web", audience="istio-ca"
    )
    err = await attempt(workload)
    assert err.code is grpc.StatusCode.PERMISSION_DENIED
    assert f"ServiceAccount {namespace}/web, which is not a trusted node account" in err.details

    # The ztunnel's token for the API server (its default audience), not for the CA.
    api = await request_token(admin, pod=z1.name, uid=z1.uid)
    err = await attempt(api)
    assert err.code is grpc.StatusCode.UNAUTHENTICATED
    assert "invalid for the target audiences" in err.details

    # A ztunnel token bound to no pod: the CA could not tell its node.
    unbound = await request_token(admin, pod=None, audience="istio-ca")
    err = await attempt(unbound)
    assert err.code is grpc.StatusCode.UNAUTHENTICATED
    assert "is not bound to a pod" in err.details

    # Invalid: a valid token with its signature altered, and no token at all.
    good = await z1.token_source().token()
    head, payload, signature = good.split(".")
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    err = await attempt(f"{head}.{payload}.{flipped}")
    assert err.code is grpc.StatusCode.UNAUTHENTICATED
    assert "the API server rejected the token: [invalid bearer token" in err.details
    err = await attempt("not-a-token")
    assert err.code is grpc.StatusCode.UNAUTHENTICATED

    # The genuine token still works: the refusals above changed nothing.
    async with ca(controlplane, one, StaticToken(good)) as client:
        assert await issue(client, web) == [web.uri]


async def test_a_token_of_a_deleted_or_recreated_pod_is_refused(
    controlplane: RunningPlane,
    admin: KubeClient,
    kubelet: KubeletStandIn,
    ztunnels: ZtunnelPods,
    namespace: str,
) -> None:
    """The TokenReview of a token whose pod was deleted may still say yes for a while
    (the API server caches successful authentications for 10 s, the CA its reviews for
    30 s): the CA's own check of the token's pod against its informer cache refuses it
    at once, naming why."""
    one, _ = await two_nodes(admin, kubelet, namespace, "gone")
    web = SpiffeId(TD, namespace, "web")
    z1 = await ztunnels.start(one, name=f"ztunnel-{namespace}")
    old = await z1.token_source().token()
    async with ca(controlplane, one, StaticToken(old)) as client:
        assert await issue(client, web) == [web.uri]  # its review is cached now
        await ztunnels.stop(z1)
        err = await until_refused(client, web, expect="no longer exists")
        assert err.code is grpc.StatusCode.UNAUTHENTICATED
        assert f"bound to pod istio-system/{z1.name}, which no longer exists" in err.details

        # Recreated with the same name: another uid, the old token stays refused.
        again = await ztunnels.start(one, name=z1.name)
        assert again.uid != z1.uid
        err = await until_refused(client, web, expect="now has uid")
        assert err.code is grpc.StatusCode.UNAUTHENTICATED
        assert f"with uid {z1.uid}, but that pod now has uid {again.uid}" in err.details
    async with ca(controlplane, one, again.token_source()) as fresh:
        assert await issue(fresh, web) == [web.uri]


async def until_refused(
    client: CaClient, identity: SpiffeId, expect: str = "", attempts: int = 100
) -> CaClientError:
    """Ask until the CA refuses (with ``expect`` in the reason): its informer cache follows
    the API server's events, a few milliseconds behind. Bounded."""
    for _ in range(attempts):
        try:
            await issue(client, identity)
        except CaClientError as err:
            if expect in err.details:
                return err
        await asyncio.sleep(0.05)
    raise AssertionError(f"the CA did not refuse {identity} after {attempts} attempts")


class Recording:
    """A ``TokenSource`` that records each token it hands out."""

    def __init__(self, inner: TokenSource) -> None:
        self.inner = inner
        self.handed: list[str] = []

    async def token(self) -> str:
        self.handed.append(await self.inner.token())
        return self.handed[-1]

    def describe(self) -> str:
        return self.inner.describe()


async def test_certificate_renewal_across_token_renewal(
    controlplane: RunningPlane,
    admin: KubeClient,
    kubelet: KubeletStandIn,
    ztunnels: ZtunnelPods,
    namespace: str,
    tmp_path: Path,
) -> None:
    one, _ = await two_nodes(admin, kubelet, namespace, "renew")
    web = SpiffeId(TD, namespace, "web")
    z1 = await ztunnels.start(one)

    # TokenRequest: once 80 % of its lifetime is past, the next call renews the token.
    ahead = [0.0]
    source = z1.token_source(clock=lambda: time.time() + ahead[0])
    recording = Recording(source)
    async with ca(controlplane, one, recording) as client:
        assert await issue(client, web) == [web.uri]
        assert await issue(client, web) == [web.uri]
        first = recording.handed[-1]
        assert source.requests == 1 and recording.handed == [first, first]
        ahead[0] = 0.81 * 12 * 3600  # the clock moves past 80 % of the 12 h lifetime
        assert await issue(client, web) == [web.uri]  # with a new token
        assert source.requests == 2 and recording.handed[-1] != first

    # A projected token file, re-read on every call, as the kubelet rotates it; the
    # certificate manager renews a short-lived certificate at half-life meanwhile.
    path = tmp_path / "istio-token"
    path.write_text(await z1.token_source().token())
    recording = Recording(FileTokenSource(path))
    client = ca(controlplane, one, recording, ttl=timedelta(seconds=4))
    renewed = asyncio.Event()
    async with client, CertificateManager(client.issue) as manager:
        cert = await manager.get(web)
        path.write_text(await z1.token_source().token())  # the kubelet rotates the file
        rotated = path.read_text()
        manager.subscribe(lambda c: renewed.set() if c is not cert else None)
        async with asyncio.timeout(20):
            await renewed.wait()  # renewed at half-life (2 s) with the rotated token
        assert recording.handed[-1] == rotated != recording.handed[0]
        assert (await manager.get(web)).not_after > cert.not_after
        path.write_text("garbage-in-the-file")  # what is in the file is what is sent
        err = await refused(client, web)
        assert err.code is grpc.StatusCode.UNAUTHENTICATED


async def test_the_ztunnel_account_may_only_mint_its_own_pods_token(
    admin: KubeClient, kubelet: KubeletStandIn, ztunnels: ZtunnelPods
) -> None:
    """``ambient install``: the ztunnel's own credentials may request a token of its account
    bound to its own pod — nothing else (RBAC, and the token-binding admission policy:
    without it node 1's ztunnel could mint node 2's token and get node 2's pods' keys)."""
    await kubelet.register("mint-1", "192.168.71.1")
    await kubelet.register("mint-2", "192.168.71.2")
    z1, z2 = await ztunnels.start("mint-1"), await ztunnels.start("mint-2")
    assert await z1.token_source().token()  # its own pod: fine
    await forbidden(
        lambda: request_token(z1.client, pod=z2.name, uid=z2.uid, audience="istio-ca"),
        "may only request tokens bound to its own pod",
    )
    await forbidden(
        lambda: request_token(z1.client, pod=z1.name, uid=z2.uid, audience="istio-ca"),
        "may only request tokens bound to its own pod",
    )
    await forbidden(
        lambda: request_token(z1.client, pod=None, audience="istio-ca"),
        "may only request tokens bound to its own pod",
    )
    await forbidden(
        lambda: request_token(z1.client, pod=z1.name, account="istiod", audience="istio-ca"),
        'cannot create resource "serviceaccounts/token"',
    )
    await forbidden(lambda: z1.client.get(POD.path("istio-system")), 'cannot list resource "pods"')
    # Credentials not bound to a pod (kubectl create token ztunnel) mint nothing.
    unbound = await request_token(admin, pod=None)
    path = token_kubeconfig(ztunnels.admin_kubeconfig, unbound, ztunnels.folder / "u.kc", "u")
    client = KubeClient(load_config(ClusterTarget(path)))
    try:
        await forbidden(
            lambda: request_token(client, pod=z1.name, uid=z1.uid, audience="istio-ca"),
            "must request its token with credentials bound to its own pod",
        )
    finally:
        await client.close()


async def forbidden(call: Callable[[], Awaitable[object]], reason: str, attempts: int = 50) -> None:
    """``call`` is refused for ``reason`` (RBAC: 403; the admission policy: 422). Retried,
    bounded: a policy that ``ambient install`` just applied takes the API server a moment
    to enforce."""
    for _ in range(attempts):
        try:
            await call()
        except KubeError as err:
            if reason in str(err) and err.code in (403, 422):
                return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not refused for {reason!r} after {attempts} attempts")
