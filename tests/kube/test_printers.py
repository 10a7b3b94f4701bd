"""``ambient get``'s tables against kubectl v1.37's on the same objects in the dev cluster.

Two comparisons per kind: our folder-mode printers (``ambient.cli.printers``) fed the
objects ``kubectl get -o json`` returns, and ``ambient get --kubeconfig`` (the API
server's table); each must print kubectl's header line exactly and the same cells
(AGE aside: the two reads are a moment apart).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import redirect_stdout

import pytest

from ambient.cli.output import print_kube_table
from ambient.cli.printers import table
from ambient.devcluster import DevCluster
from tests.kube.conftest import Kubectl

pytestmark = [pytest.mark.slow, pytest.mark.kube]

NS = "printers"
OBJECTS = f"""\
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: web, namespace: {NS}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {NS}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: web, image: web:1}}, {{name: side, image: side:2}}]}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: agent, namespace: {NS}}}
spec:
  selector: {{matchLabels: {{app: agent}}}}
  template:
    metadata: {{labels: {{app: agent}}}}
    spec:
      nodeSelector: {{printers-test: none}}
      containers: [{{name: agent, image: agent:1}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: probe, namespace: {NS}, labels: {{app: probe}}}}
spec: {{containers: [{{name: probe, image: probe:1}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {NS}}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 8080}}, {{name: dns, port: 53, protocol: UDP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: waypoint, namespace: {NS}}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{{name: mesh, port: 15008, protocol: HBONE}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web, namespace: {NS}}}
spec:
  parentRefs: [{{group: "", kind: Service, name: web}}]
  hostnames: [web.example]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: {NS}}}
spec:
  hosts: [web, web.{NS}]
  http: [{{route: [{{destination: {{host: web}}}}]}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: web, namespace: {NS}}}
spec: {{host: web.{NS}.svc.cluster.local}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: deny, namespace: {NS}}}
spec: {{action: DENY, rules: [{{}}]}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: strict, namespace: {NS}}}
spec: {{mtls: {{mode: STRICT}}}}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt, namespace: {NS}}}
spec: {{}}
"""

KINDS = [
    ("pods", False),
    ("pods", True),
    ("deployments", False),
    ("deployments", True),
    ("daemonsets", False),
    ("daemonsets", True),
    ("services", False),
    ("services", True),
    ("serviceaccounts", False),
    ("namespaces", False),
    ("nodes", False),
    ("nodes", True),
    ("gateways.gateway.networking.k8s.io", False),
    ("httproutes", False),
    ("virtualservices", False),
    ("destinationrules", False),
    ("authorizationpolicies", False),
    ("peerauthentications", False),
    ("requestauthentications", False),
]


NODE = """\
apiVersion: v1
kind: Node
metadata:
  name: printers-node
  labels: {node-role.kubernetes.io/edge: "", kubernetes.io/hostname: printers-node}
spec: {unschedulable: true}
"""


@pytest.fixture(scope="module")
def objects(dev_cluster: DevCluster, kubectl: Kubectl) -> Iterator[DevCluster]:
    done = subprocess.run(
        [sys.executable, "-m", "ambient", "install", "--kubeconfig", str(dev_cluster.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    kubectl("apply", "-f", "-", stdin=OBJECTS)
    kubectl("apply", "-f", "-", stdin=NODE)  # no kubelet: no status, never schedulable
    deadline = time.monotonic() + 60  # the deployment controller fills in the status
    while (
        "2"
        not in kubectl("get", "deploy", "web", "-n", NS, "-o", "jsonpath={.status.replicas}").stdout
    ):
        assert time.monotonic() < deadline, "the Deployment got no status"
        time.sleep(0.2)
    yield dev_cluster
    kubectl("delete", "node", "printers-node", "--wait=false", check=False)


def cells(text: str) -> tuple[str, list[list[str]]]:
    """(the header line, each row cut at the header's column starts, without AGE)."""
    header, *lines = text.splitlines()
    names = header.split("   ")
    names = [n.strip() for n in names if n.strip()]
    starts: list[int] = []
    for name in names:
        starts.append(header.index(name, starts[-1] + 1 if starts else 0))
    rows = []
    for line in lines:
        row = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        rows.append([c for c, n in zip(row, names, strict=True) if n != "AGE"])
    return header, rows


def namespaced(kind: str) -> list[str]:
    """Where to look: the test's namespace (other tests make and drop namespaces and
    nodes meanwhile, so the Namespace and the Node are asked by name)."""
    return {"namespaces": [NS], "nodes": ["printers-node"]}.get(kind, ["-n", NS])


@pytest.mark.parametrize(("kind", "wide"), KINDS)
def test_our_printers_print_what_kubectl_prints(
    objects: DevCluster, kubectl: Kubectl, kind: str, wide: bool
) -> None:
    shown = kubectl("get", kind, *namespaced(kind), *(["-o", "wide"] if wide else [])).stdout
    answer = json.loads(kubectl("get", kind, *namespaced(kind), "-o", "json").stdout)
    items = answer.get("items", [answer])
    headers, rows = table(
        items,
        kind=items[0]["kind"],
        api_version=items[0]["apiVersion"],
        wide=wide,
        all_namespaces=False,
    )
    ours = io.StringIO()
    with redirect_stdout(ours):
        print_kube_table(headers, rows)
    assert cells(ours.getvalue()) == cells(shown), f"kubectl:\n{shown}\nours:\n{ours.getvalue()}"
    if not wide:
        assert ours.getvalue().splitlines()[0] == shown.splitlines()[0]


@pytest.mark.parametrize(("kind", "wide"), KINDS)
def test_ambient_get_on_a_cluster_prints_what_kubectl_prints(
    objects: DevCluster, kubectl: Kubectl, kind: str, wide: bool
) -> None:
    args = ["get", kind, *namespaced(kind), *(["-o", "wide"] if wide else [])]
    shown = kubectl(*args).stdout
    ours = subprocess.run(
        [sys.executable, "-m", "ambient", *args, "--kubeconfig", str(objects.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert ours.returncode == 0, ours.stderr
    assert cells(ours.stdout) == cells(shown), f"kubectl:\n{shown}\nours:\n{ours.stdout}"
