"""Identity from Kubernetes, around the CA: xDS authenticated by the same token, the control
plane reviewing tokens with its own account's RBAC, the pod cache's fallback to the API
server, and ``ambient ztunnel --kubeconfig`` as a process with the ztunnel's own
credentials."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from ambient.controlplane.source import NotAuthorized
from ambient.devcluster import DevCluster
from ambient.identity.spiffe import SpiffeId
from ambient.identity.tokensource import bearer_metadata
from ambient.kube.api import ClusterTarget, KubeClient, load_config
from ambient.kube.cache import ClusterCache
from ambient.kube.kinds import NAMESPACE, POD
from ambient.kube.nodeauth import KubeNodeAuth
from ambient.local.nodeclients import CHANNEL_OPTIONS
from ambient.xds.client import METHOD
from ambient.xds.proto import core_pb2, discovery_pb2
from tests.kube.controlplane.conftest import RunningPlane, ambient
from tests.kube.controlplane.test_identity import ca, issue, two_nodes
from tests.kube.controlplane.test_rbac import CLUSTER_ROLE
from tests.kube.controlplane.test_watch import create, pod
from tests.kube.kubelet import KubeletStandIn
from tests.kube.ztunnel_pods import ZtunnelPods, request_token

pytestmark = [pytest.mark.slow, pytest.mark.kube]

TD = "cluster.local"
SELF_REVIEWS = "/apis/authentication.k8s.io/v1/selfsubjectreviews"


@pytest.fixture
async def ztunnels(
    admin: KubeClient, installed: DevCluster, tmp_path: Path
) -> AsyncIterator[ZtunnelPods]:
    pods = ZtunnelPods(admin, installed.kubeconfig, tmp_path)
    yield pods
    await pods.close()


async def first_answer(plane: RunningPlane, node: str, token: str | None) -> Any:
    """Open an xDS stream claiming ``node`` with ``token``: its first response, or the
    ``AioRpcError`` that refused it."""
    roots = await asyncio.to_thread(Path(plane.info["node_ca_root"]).read_bytes)
    credentials = grpc.ssl_channel_credentials(root_certificates=roots)
    async with grpc.aio.secure_channel(
        plane.info["xds_address"], credentials, options=CHANNEL_OPTIONS
    ) as channel:
        call = channel.stream_stream(
            METHOD,
            request_serializer=discovery_pb2.DeltaDiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DeltaDiscoveryResponse.FromString,
        )(metadata=bearer_metadata(token) if token else None)
        await call.write(
            discovery_pb2.DeltaDiscoveryRequest(
                node=core_pb2.Node(id=node),
                type_url="type.googleapis.com/istio.workload.Address",
            )
        )
        try:
            async with asyncio.timeout(20):
                return await call.read()
        except grpc.aio.AioRpcError as err:
            return err
        finally:
            call.cancel()


async def test_xds_streams_are_authenticated_by_the_nodes_token(
    controlplane: RunningPlane, kubelet: KubeletStandIn, ztunnels: ZtunnelPods
) -> None:
    await kubelet.register("xds-1", "192.168.73.1")
    z1 = await ztunnels.start("xds-1")
    token = await z1.token_source().token()
    answer = await first_answer(controlplane, "xds-1", token)
    assert isinstance(answer, discovery_pb2.DeltaDiscoveryResponse), answer

    other = await first_answer(controlplane, "xds-2", token)
    assert isinstance(other, grpc.aio.AioRpcError)
    assert other.code() is grpc.StatusCode.PERMISSION_DENIED
    assert (
        f"the xDS stream claims node 'xds-2', but it comes from node xds-1 "
        f"(pod istio-system/{z1.name}" in str(other.details())
    )
    anonymous = await first_answer(controlplane, "xds-1", None)
    assert isinstance(anonymous, grpc.aio.AioRpcError)
    assert anonymous.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "authorization: Bearer" in str(anonymous.details())
    assert "xDS stream refused for node xds-2" in controlplane.log_text()
    # Node certificates mean nothing here: the cluster's ports ask for none, and there
    # is no join port.
    assert "join_address" not in controlplane.info
    assert controlplane.info["node_auth"] == "kubernetes"


async def test_the_control_plane_reviews_tokens_with_its_own_account(
    controlplane: RunningPlane,
    installed: DevCluster,
    admin: KubeClient,
    kubelet: KubeletStandIn,
    ztunnels: ZtunnelPods,
    namespace: str,
) -> None:
    """Without ``create`` on tokenreviews in the ``istiod`` ClusterRole, certificates are
    refused naming the missing rule (the process does not run as admin); ``ambient
    install`` puts the rule back and they are issued again."""
    one, _ = await two_nodes(admin, kubelet, namespace, "review")
    web = SpiffeId(TD, namespace, "web")
    z1 = await ztunnels.start(one)
    role = await admin.get(CLUSTER_ROLE.path(None, "ambient-istiod"))
    assert any(
        r["resources"] == ["tokenreviews"] and r["verbs"] == ["create"] for r in role["rules"]
    )
    stripped = [r for r in role["rules"] if "tokenreviews" not in r["resources"]]
    await admin.patch(CLUSTER_ROLE.path(None, "ambient-istiod"), {"rules": stripped})
    try:

        async def with_a_fresh_token() -> None:  # a new token: none of its reviews is cached
            token = await request_token(z1.client, pod=z1.name, uid=z1.uid, audience="istio-ca")
            async with ca(controlplane, one, _Static(token)) as client:
                await issue(client, web)

        await refused_until(with_a_fresh_token, "may not review tokens")
    finally:
        done = ambient("install", "--kubeconfig", str(installed.kubeconfig))
        assert done.returncode == 0, done.stderr
    await succeeds_eventually(with_a_fresh_token)
    assert "tokenreviews.authentication.k8s.io" in controlplane.log_text()


class _Static:
    def __init__(self, token: str) -> None:
        self.value = token

    async def token(self) -> str:
        return self.value

    def describe(self) -> str:
        return "a test's token"


async def refused_until(call: Any, reason: str, attempts: int = 100) -> None:
    """Until ``call`` is refused for ``reason`` (RBAC changes reach the API server's
    authorizer a moment later). Bounded."""
    from ambient.xds.ca_client import CaClientError

    for _ in range(attempts):
        try:
            await call()
        except CaClientError as err:
            if reason in err.details:
                assert err.code is grpc.StatusCode.UNAUTHENTICATED
                return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not refused for {reason!r} after {attempts} attempts")


async def succeeds_eventually(call: Any, attempts: int = 100) -> None:
    from ambient.xds.ca_client import CaClientError

    last: Exception | None = None
    for _ in range(attempts):
        try:
            await call()
            return
        except CaClientError as err:
            last = err
        await asyncio.sleep(0.1)
    raise AssertionError(f"still refused after {attempts} attempts: {last}")


async def test_a_pod_the_cache_has_not_seen_is_asked_of_the_api_server(
    admin: KubeClient,
    kubelet: KubeletStandIn,
    ztunnels: ZtunnelPods,
    sa_kubeconfig: Path,
    namespace: str,
) -> None:
    """The CA's questions go to the informer cache; when it does not have the caller's pod
    or a pod of the asked identity (a pod bound a moment ago), one request to the API
    server (with the control plane's own account) settles it, as fast as the cache would."""
    one, two = await two_nodes(admin, kubelet, namespace, "miss")
    z1 = await ztunnels.start(one)
    client = KubeClient(load_config(ClusterTarget(sa_kubeconfig)))
    try:
        empty = ClusterCache()  # nothing listed yet
        auth = KubeNodeAuth(client, empty, trust_domain=TD)
        caller = await auth.verify(await z1.token_source().token())
        assert caller.node == one and auth.pod_gets == 1
        await auth.authorize(one, SpiffeId(TD, namespace, "web"))
        assert auth.pod_lists == 1
        with pytest.raises(NotAuthorized, match=f"its pods run on {two}"):
            await auth.authorize(one, SpiffeId(TD, namespace, "db"))

        # A cache that has the pods answers alone.
        cache = ClusterCache()
        for listed in (await client.list(f"/api/v1/namespaces/{namespace}/pods"))[0] + [
            await client.get(f"/api/v1/namespaces/istio-system/pods/{z1.name}")
        ]:
            cache.upsert(POD, listed)
        warm = KubeNodeAuth(client, cache, trust_domain=TD)
        token = await z1.token_source().token()
        assert (await warm.verify(token)).node == one
        await warm.authorize(one, SpiffeId(TD, namespace, "web"))
        assert warm.pod_gets == 0 and warm.pod_lists == 0

        # The pod is recreated: the cache (not fed here) still has the old uid; the API
        # server has the new one, the new token's: accepted after one GET.
        await ztunnels.stop(z1)
        again = await ztunnels.start(one, name=z1.name)
        assert (await warm.verify(await again.token_source().token())).node == one
        assert warm.pod_gets == 1
    finally:
        await client.close()


async def test_ambient_ztunnel_with_its_own_credentials(
    controlplane: RunningPlane,
    admin: KubeClient,
    kubelet: KubeletStandIn,
    ztunnels: ZtunnelPods,
    namespace: str,
    tmp_path: Path,
) -> None:
    """``ambient ztunnel --kubeconfig`` (the ztunnel pod's own token: not admin) requests its
    CA token, follows xDS and gets the certificate of its node's ambient pod."""
    await kubelet.register("zp-1", "192.168.74.1")
    await kubelet.register("zp-2", "192.168.74.2")
    await admin.patch(
        NAMESPACE.path(None, namespace),
        {"metadata": {"labels": {"istio.io/dataplane-mode": "ambient"}}},
    )
    await admin.create(
        f"/api/v1/namespaces/{namespace}/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "web"}},
    )
    await create(admin, pod(namespace, "web", {"app": "web"}, node="zp-1", sa="web"))
    await kubelet.run(namespace, "web", "127.74.0.2")
    z1, z2 = await ztunnels.start("zp-1"), await ztunnels.start("zp-2")
    info = controlplane.info
    # What the process is given: the ztunnel pod's own credentials, not admin's.
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    me = (await z1.client.create(SELF_REVIEWS, review))["status"]["userInfo"]
    assert me["username"] == "system:serviceaccount:istio-system:ztunnel"
    assert me["extra"]["authentication.kubernetes.io/pod-name"] == [z1.name]

    def ztunnel(z_name: str, log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "ambient", "ztunnel", "--node", "zp-1",
                 "--node-ip", "127.74.0.1", "--control-plane", info["ca_address"],
                 "--xds", info["xds_address"], "--ca-root", info["node_ca_root"],
                 "--kubeconfig", str(z1.kubeconfig), "--pod-name", z_name],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip

    # Pretending to be node zp-2's ztunnel with zp-1's credentials: no token, exit 1.
    impostor = ztunnel(z2.name, tmp_path / "impostor.log")
    assert impostor.wait(timeout=60) == 1
    said = (tmp_path / "impostor.log").read_text()
    assert "cannot authenticate" in said and "may only request tokens bound to its own pod" in said

    process = ztunnel(z1.name, tmp_path / "ztunnel.log")
    try:
        web = SpiffeId(TD, namespace, "web")
        dump = await until(lambda: _certificates("127.74.0.1"), web.uri, process, tmp_path)
        assert web.uri in dump
    finally:
        process.terminate()
        process.wait(timeout=15)
    log = controlplane.log_text()
    assert f"issued a certificate for {web.uri} to node zp-1 (pod istio-system/{z1.name}" in log


def _certificates(ip: str) -> str:
    with urllib.request.urlopen(f"http://{ip}:15000/config_dump", timeout=2) as answer:
        dump = json.loads(answer.read())
    return json.dumps(dump.get("certificates", []))


async def until(
    read: Any, wanted: str, process: subprocess.Popen[bytes], folder: Path, attempts: int = 300
) -> str:
    """Poll the ztunnel's admin endpoint until ``wanted`` appears (bounded)."""
    text = ""
    for _ in range(attempts):
        if process.poll() is not None:
            break
        try:
            text = await asyncio.to_thread(read)
        except OSError:
            text = ""
        if wanted in text:
            return text
        await asyncio.sleep(0.1)
    raise AssertionError(
        f"{wanted} not in the ztunnel's certificates: {text}\n"
        f"{(folder / 'ztunnel.log').read_text(errors='replace')[-3000:]}"
    )
