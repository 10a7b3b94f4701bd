"""The test meshes' builder (``tests/e2e/manifests.py``): what it writes is what a manifest
by hand would say, and ``ambient up``'s loader takes it without a warning."""

from __future__ import annotations

import sys

import yaml

from ambient.config import load_text
from tests.e2e import manifests as k8s

BY_HAND = """\
apiVersion: v1
kind: Namespace
metadata:
  name: ns
  labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: waypoint
  namespace: ns
  labels: {istio.io/waypoint-for: service}
  annotations: {ambient.io/nodes: node-1}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: client, namespace: ns}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: ns}
spec:
  selector: {app: echo}
  ports: [{name: grpc, port: 50051}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo-v2, namespace: ns}
spec:
  replicas: 2
  selector: {matchLabels: {app: echo}}
  template:
    metadata:
      labels: {app: echo, version: v2}
      annotations: {ambient.io/application-tunnel: PROXY}
    spec:
      nodeName: node-2
      containers:
      - name: echo
        command: [PYTHON, echo.py]
        ports: [{containerPort: 50051}]
        securityContext: {privileged: true}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: ns}
spec:
  serviceAccountName: client
  containers:
  - name: client
    command: [PYTHON, -c, "import signal; signal.pause()"]
    env: [{name: A, value: b}]
"""


BUILT = k8s.manifest(
    k8s.namespace("ns", waypoint="waypoint"),
    k8s.waypoint("ns", nodes="node-1"),
    k8s.service_account("ns", "client"),
    k8s.service("ns", "echo", [{"name": "grpc", "port": 50051}]),
    k8s.deployment("ns", "echo-v2", k8s.python("echo.py"), replicas=2,
                   labels={"app": "echo", "version": "v2"}, selector={"app": "echo"},
                   annotations={"ambient.io/application-tunnel": "PROXY"}, container="echo",
                   node="node-2", ports=[50051], privileged=True),
    k8s.pod("ns", "client", k8s.python("-c", k8s.SLEEP), labels={},
            service_account="client", env=[{"name": "A", "value": "b"}]),
)  # fmt: skip


def test_the_builders_write_what_a_manifest_by_hand_says() -> None:
    by_hand = BY_HAND.replace("PYTHON", sys.executable)
    assert list(yaml.safe_load_all(BUILT)) == list(yaml.safe_load_all(by_hand))


def test_literal_documents_are_kept_as_written_between_built_ones() -> None:
    literal = "# kept\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a, namespace: ns}\n"
    text = k8s.manifest(k8s.namespace("ns", ambient=False), literal, k8s.namespace("other"))
    assert literal in text
    names = [(d["kind"], d["metadata"]) for d in yaml.safe_load_all(text)]
    assert names == [
        ("Namespace", {"name": "ns"}),
        ("ServiceAccount", {"name": "a", "namespace": "ns"}),
        ("Namespace", {"name": "other", "labels": {"istio.io/dataplane-mode": "ambient"}}),
    ]


def test_a_built_mesh_loads_without_a_warning() -> None:
    config = load_text(BUILT, "mesh.yaml")
    assert config.warnings == ()
    assert sorted((o.kind, o.meta.name) for o in config) == [
        ("Deployment", "echo-v2"),
        ("Gateway", "waypoint"),
        ("Namespace", "ns"),
        ("Pod", "client"),
        ("Service", "echo"),
        ("ServiceAccount", "client"),
    ]
