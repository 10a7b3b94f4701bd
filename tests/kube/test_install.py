"""ambient install against a real API server: CRDs, namespace, GatewayClass, least-privilege RBAC."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from ambient.devcluster import DevCluster
from ambient.install.crds import ensure_crds, load_crds
from ambient.install.manifests import mesh_objects
from tests.kube.conftest import Kubectl

pytestmark = [pytest.mark.slow, pytest.mark.kube]

ISTIOD = "system:serviceaccount:istio-system:istiod"
ZTUNNEL = "system:serviceaccount:istio-system:ztunnel"
NODE_AGENT = "system:serviceaccount:istio-system:istio-cni"
MESH_KINDS = ("clusterrole/ambient-istiod", "gatewayclass/istio-waypoint", "namespace/istio-system")


def ambient(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ambient", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def crd_names() -> list[str]:
    docs = load_crds(ensure_crds())
    return [d["metadata"]["name"] for d in docs if d["kind"] == "CustomResourceDefinition"]


def _key(kind: str, namespace: str, name: str) -> str:
    return f"{kind}/{namespace}/{name}"


def applied_keys() -> set[str]:
    """kind/namespace/name of every object install applies."""
    objects = [*load_crds(ensure_crds()), *mesh_objects()]
    return {
        _key(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in objects
    }


def versions(kubectl: Kubectl) -> dict[str, tuple[str, int | None]]:
    """resourceVersion and generation of each object install applied.

    Only those: the cluster's controllers keep writing their own objects meanwhile.
    Two resourceVersions move without any change of ours, so only their generation
    (which counts spec changes) is compared: the GatewayClass's on every apply (its
    CRD defaults ``status`` at read time, so the stored object differs from the
    defaulted one and the API server writes) and the ValidatingAdmissionPolicy's
    (the controller-manager writes its type-checking ``status`` when it gets to it).
    """
    listed = kubectl(
        "get",
        "crd,clusterrole,clusterrolebinding,gatewayclass,namespace,sa,role,rolebinding,"
        "validatingadmissionpolicy,validatingadmissionpolicybinding",
        "-A",
        "-o",
        "json",
    )
    wanted = applied_keys()
    found = {}
    for item in json.loads(listed.stdout)["items"]:
        meta = item["metadata"]
        key = _key(item["kind"], meta.get("namespace", ""), meta["name"])
        if key in wanted:
            moves = item["kind"] in ("GatewayClass", "ValidatingAdmissionPolicy")
            rv = "(moves)" if moves else meta["resourceVersion"]
            found[key] = (rv, meta.get("generation"))
    return found


@pytest.fixture(scope="module")
def installed(dev_cluster: DevCluster, kubectl: Kubectl) -> Iterator[DevCluster]:
    done = ambient("install", "--kubeconfig", str(dev_cluster.kubeconfig))
    assert done.returncode == 0, done.stderr
    yield dev_cluster


def test_install_twice_changes_nothing(installed: DevCluster, kubectl: Kubectl) -> None:
    before = versions(kubectl)
    assert (
        "GatewayClass//istio-waypoint" in before and "Role/istio-system/ambient-ztunnel" in before
    )
    again = ambient("install", "--kubeconfig", str(installed.kubeconfig))
    assert again.returncode == 0, again.stderr
    assert versions(kubectl) == before  # server-side apply of the same: no writes


def test_crds_are_established_and_listed(installed: DevCluster, kubectl: Kubectl) -> None:
    names = crd_names()
    assert "grpcroutes.gateway.networking.k8s.io" in names
    assert "authorizationpolicies.security.istio.io" in names
    assert not [n for n in names if n.endswith(".extensions.istio.io")]
    listed = kubectl("get", "crd", "-o", "name").stdout.split()
    assert sorted(f"customresourcedefinition.apiextensions.k8s.io/{n}" for n in names) == sorted(
        listed
    )
    for name in names:
        status = kubectl(
            "get",
            "crd",
            name,
            "-o",
            'jsonpath={.status.conditions[?(@.type=="Established")].status}',
        )
        assert status.stdout == "True", name
    for obj in MESH_KINDS:
        kubectl("get", obj)
    controller = kubectl(
        "get", "gatewayclass", "istio-waypoint", "-o", "jsonpath={.spec.controllerName}"
    )
    assert controller.stdout == "istio.io/mesh-controller"


GOOD = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-web, namespace: default}
spec:
  action: ALLOW
  rules: [{from: [{source: {principals: ["cluster.local/ns/default/sa/web"]}}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: default}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: orders, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: orders}]
  rules: [{matches: [{path: {type: PathPrefix, value: /v2}}], backendRefs: [{name: orders, port: 8080}]}]
"""


def test_mesh_objects_can_be_created(installed: DevCluster, kubectl: Kubectl) -> None:
    kubectl("apply", "-f", "-", stdin=GOOD)
    names = kubectl(
        "get",
        "authorizationpolicy,gateway.gateway.networking.k8s.io,httproute",
        "-n",
        "default",
        "-o",
        "name",
    )
    assert names.stdout.split() == [
        "authorizationpolicy.security.istio.io/allow-web",
        "gateway.gateway.networking.k8s.io/waypoint",
        "httproute.gateway.networking.k8s.io/orders",
    ]
    kubectl("delete", "-f", "-", stdin=GOOD)


@pytest.mark.parametrize(
    ("manifest", "complaint"),
    [
        (
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
            "metadata: {name: bad, namespace: default}\nspec: {action: MAYBE}\n",
            "spec.action",
        ),
        (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n"
            "metadata: {name: bad, namespace: default}\n"
            "spec: {rules: [{matches: [{path: {type: Sometimes, value: /}}]}]}\n",
            "spec.rules[0].matches[0].path.type",
        ),
        (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n"
            "metadata: {name: bad, namespace: default}\nspec: {gatewayClassName: istio-waypoint}\n",
            "spec.listeners",
        ),
    ],
)
def test_schema_rejects_bad_objects(
    installed: DevCluster, kubectl: Kubectl, manifest: str, complaint: str
) -> None:
    refused = kubectl("create", "-f", "-", stdin=manifest, check=False)
    assert refused.returncode != 0
    assert complaint in refused.stderr, refused.stderr


CONTROL_PLANE_MAY = [
    ("list", "pods", "-A"),
    ("watch", "namespaces"),
    ("watch", "nodes"),
    ("list", "serviceaccounts", "-A"),
    ("watch", "endpointslices.discovery.k8s.io", "-A"),
    ("watch", "authorizationpolicies.security.istio.io", "-A"),
    ("list", "virtualservices.networking.istio.io", "-A"),
    ("watch", "telemetries.telemetry.istio.io", "-A"),
    ("watch", "grpcroutes.gateway.networking.k8s.io", "-A"),
    ("update", "gateways.gateway.networking.k8s.io", "--subresource=status", "-n", "shop"),
    ("patch", "httproutes.gateway.networking.k8s.io", "--subresource=status", "-n", "shop"),
    ("update", "grpcroutes.gateway.networking.k8s.io", "--subresource=status", "-n", "shop"),
    ("update", "gatewayclasses.gateway.networking.k8s.io", "--subresource=status"),
    ("create", "deployments.apps", "-n", "shop"),
    ("patch", "services", "-n", "shop"),
    ("create", "tokenreviews.authentication.k8s.io"),
    ("create", "events", "-n", "shop"),
    ("update", "leases.coordination.k8s.io", "-n", "istio-system"),
]
CONTROL_PLANE_MAY_NOT = [
    ("get", "secrets", "-n", "istio-system"),
    ("list", "secrets", "-A"),
    ("create", "pods", "-n", "shop"),
    ("update", "gateways.gateway.networking.k8s.io", "-n", "shop"),  # spec is the user's
    ("create", "authorizationpolicies.security.istio.io", "-n", "shop"),
    ("create", "serviceaccounts", "--subresource=token", "-n", "istio-system"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ("update", "leases.coordination.k8s.io", "-n", "kube-system"),
]
ZTUNNEL_MAY = [("create", "serviceaccounts/ztunnel", "--subresource=token", "-n", "istio-system")]
ZTUNNEL_MAY_NOT = [
    ("create", "serviceaccounts/istiod", "--subresource=token", "-n", "istio-system"),
    ("create", "serviceaccounts/default", "--subresource=token", "-n", "default"),
    ("list", "pods", "-A"),
    ("get", "secrets", "-n", "istio-system"),
    ("create", "tokenreviews.authentication.k8s.io"),
]


NODE_AGENT_MAY = [
    ("get", "pods", "-n", "shop"),  # the pod a CNI ADD names: node, uid, labels
    ("get", "namespaces"),  # its namespace's dataplane-mode
    ("get", "daemonsets.apps/istio-cni-node", "-n", "istio-system"),  # upgrade or uninstall
    ("patch", "pods", "--subresource=status", "-n", "shop"),  # the redirection annotation
]
NODE_AGENT_MAY_NOT = [
    ("list", "pods", "-A"),
    ("watch", "pods", "-n", "shop"),
    ("patch", "pods", "-n", "shop"),
    ("delete", "pods", "-n", "shop"),
    ("get", "secrets", "-n", "istio-system"),
    ("get", "daemonsets.apps", "-n", "kube-system"),
    ("get", "daemonsets.apps/ztunnel", "-n", "istio-system"),
    ("update", "daemonsets.apps", "-n", "istio-system"),
    ("create", "serviceaccounts/istio-cni", "--subresource=token", "-n", "istio-system"),
    ("create", "tokenreviews.authentication.k8s.io"),
]


def can_i(kubectl: Kubectl, who: str, check: tuple[str, ...]) -> bool:
    answer = kubectl("auth", "can-i", f"--as={who}", *check, check=False)
    assert answer.stdout.strip() in ("yes", "no"), answer.stderr
    return answer.stdout.strip() == "yes"


def test_least_privilege_rbac(installed: DevCluster, kubectl: Kubectl) -> None:
    wrong = [c for c in CONTROL_PLANE_MAY if not can_i(kubectl, ISTIOD, c)]
    wrong += [c for c in CONTROL_PLANE_MAY_NOT if can_i(kubectl, ISTIOD, c)]
    wrong += [c for c in ZTUNNEL_MAY if not can_i(kubectl, ZTUNNEL, c)]
    wrong += [c for c in ZTUNNEL_MAY_NOT if can_i(kubectl, ZTUNNEL, c)]
    wrong += [c for c in NODE_AGENT_MAY if not can_i(kubectl, NODE_AGENT, c)]
    wrong += [c for c in NODE_AGENT_MAY_NOT if can_i(kubectl, NODE_AGENT, c)]
    assert wrong == []


ZTUNNEL_POD = """
apiVersion: v1
kind: Pod
metadata: {name: ztunnel-install-test, namespace: istio-system}
spec:
  nodeName: node-install-test
  serviceAccountName: ztunnel
  containers: [{name: istio-proxy, image: ztunnel}]
"""


def test_ztunnel_gets_a_ca_token_for_its_own_pod(installed: DevCluster, kubectl: Kubectl) -> None:
    """As its pod (credentials bound to it: the user extras a pod-bound token carries,
    impersonated here), the ztunnel may request a CA token bound to that pod; not one
    bound to nothing, nor another account's."""
    kubectl("apply", "-f", "-", stdin=ZTUNNEL_POD)
    try:
        uid = kubectl(
            "get", "pod", "-n", "istio-system", "ztunnel-install-test", "-o",
            "jsonpath={.metadata.uid}",
        ).stdout  # fmt: skip
        as_pod = [
            f"--as={ZTUNNEL}",
            "--as-user-extra=authentication.kubernetes.io/pod-name=ztunnel-install-test",
            f"--as-user-extra=authentication.kubernetes.io/pod-uid={uid}",
        ]
        bound = ["--bound-object-kind=Pod", "--bound-object-name=ztunnel-install-test"]
        token = kubectl(
            "create", "token", "ztunnel", "-n", "istio-system", "--audience=istio-ca",
            *as_pod, *bound,
        )  # fmt: skip
        assert token.stdout.count(".") == 2  # a JWT
        unbound = kubectl(
            "create", "token", "ztunnel", "-n", "istio-system", "--audience=istio-ca", *as_pod,
            check=False,
        )  # fmt: skip
        assert unbound.returncode != 0
        assert "may only request tokens bound to its own pod" in unbound.stderr
        refused = kubectl(
            "create", "token", "istiod", "-n", "istio-system", *as_pod, *bound, check=False
        )
        assert refused.returncode != 0 and "forbidden" in refused.stderr
    finally:
        kubectl(
            "delete", "-f", "-", "--grace-period=0", "--force", "--wait=false", stdin=ZTUNNEL_POD
        )


@pytest.mark.parametrize("profile", ["default", "ambient"])
def test_dry_run_yaml_is_accepted_by_the_server(
    installed: DevCluster, kubectl: Kubectl, profile: str
) -> None:
    """The ambient profile's Deployment, Service, claim and DaemonSets too: validated,
    defaulted and admitted by the API server (``--dry-run=server``), nothing created."""
    printed = ambient("install", "--dry-run", "--profile", profile)
    assert printed.returncode == 0, printed.stderr
    accepted = kubectl("apply", "--dry-run=server", "-f", "-", stdin=printed.stdout, check=False)
    assert accepted.returncode == 0, accepted.stderr
    lines = accepted.stdout.splitlines()
    assert len(lines) == printed.stdout.count("\nkind: ")  # one line per object
    assert all(line.endswith("(server dry run)") for line in lines), accepted.stdout
    if profile == "ambient":
        for created in (
            "deployment.apps/istiod created",
            "service/istiod created",
            "persistentvolumeclaim/istiod-state created",
            "daemonset.apps/ztunnel created",
            "daemonset.apps/istio-cni-node created",
        ):
            assert f"{created} (server dry run)" in lines, accepted.stdout
        left = kubectl("get", "deploy,ds,svc,pvc", "-n", "istio-system", "-o", "name")
        assert left.stdout == ""  # a dry run creates nothing


DEV_NODE = "install-dev-node"


def test_the_ambient_profile_refuses_a_cluster_of_dev_nodes(
    installed: DevCluster, kubectl: Kubectl
) -> None:
    """A node of ``ambient up --kubeconfig`` (its runtime ``ambient://``) runs the mesh
    itself: the profile's DaemonSets would run a second ztunnel and agent there."""
    kubectl("apply", "-f", "-", stdin=json.dumps(
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": DEV_NODE}}
    ))  # fmt: skip
    try:
        kubectl("patch", "node", DEV_NODE, "--subresource=status", "--type=merge", "-p",
                json.dumps({"status": {"nodeInfo": {"containerRuntimeVersion": "ambient://0.1.0"}}}))  # fmt: skip
        refused = ambient("install", "--profile", "ambient", "--kubeconfig",
                          str(installed.kubeconfig))  # fmt: skip
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert f"{DEV_NODE} run ambient up --kubeconfig" in refused.stderr
        assert "Traceback" not in refused.stderr
        left = kubectl("get", "deploy,ds", "-n", "istio-system", "-o", "name")
        assert left.stdout == ""  # refused before anything was applied
    finally:
        kubectl("delete", "node", DEV_NODE, "--wait=false", check=False)
        kubectl(
            "delete",
            "deploy,ds,svc,pvc",
            "-n",
            "istio-system",
            "--ignore-not-found",
            "-l",
            "app.kubernetes.io/managed-by=ambient",
            check=False,
        )  # if it was not refused


def test_install_reports_the_wait_for_the_crds_and_is_quiet_in_a_script(
    installed: DevCluster,
) -> None:
    """Issue 17 §6: the wait for the CRDs is reported (each one as it is Established,
    ``cli.install`` shows it as a bar on a terminal); a script reads only the result."""
    import asyncio

    from ambient.install.apply import connect, install

    crds, mesh = load_crds(ensure_crds()), mesh_objects()
    names = [c["metadata"]["name"] for c in crds if c["kind"] == "CustomResourceDefinition"]
    messages: list[str] = []

    async def run() -> None:
        client = connect(installed.kubeconfig, None)
        try:
            await install(client, crds, mesh, messages.append)
        finally:
            await client.close()

    asyncio.run(run())
    start = messages.index(f"waiting for {len(names)} CRDs to be established")
    end = messages.index(f"{len(names)} CRDs established")
    assert start == len(crds)  # after every CRD was applied...
    waited = messages[start + 1 : end]  # ...each one Established, then the rest applied
    assert waited == [f"established CustomResourceDefinition/{n}" for n in names]
    assert all(m.startswith("applied ") for m in messages[end + 1 :])

    done = ambient("install", "--kubeconfig", str(installed.kubeconfig))
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.startswith("installed: ") and done.stdout.count("\n") == 1
