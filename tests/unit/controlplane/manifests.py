"""Small manifests for control-plane tests, loaded with ``ambient.config.load_text``."""

from __future__ import annotations

import textwrap

from ambient.config import ConfigSet, load_text
from ambient.controlplane import AddressAllocator, MeshSnapshot, build_snapshot


def load(*documents: str) -> ConfigSet:
    """Load YAML documents (each dedented) as one file."""
    return load_text("\n---\n".join(textwrap.dedent(d) for d in documents), "test.yaml")


def snapshot(*documents: str, allocator: AddressAllocator | None = None) -> MeshSnapshot:
    """The index of the documents (addresses from a fresh in-memory allocator by default)."""
    return build_snapshot(load(*documents), allocator or AddressAllocator())


def namespace(name: str, mode: str | None = None) -> str:
    labels = f"labels: {{istio.io/dataplane-mode: {mode}}}" if mode else ""
    return f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  {labels}\n"


def pod(
    name: str,
    ns: str = "default",
    labels: str = "{}",
    ip: str | None = None,
    node: str = "node-1",
    ports: str = "[]",
    sa: str = "default",
) -> str:
    status = f"status: {{podIP: {ip}}}" if ip else ""
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}, labels: {labels}}}
spec:
  nodeName: {node}
  serviceAccountName: {sa}
  containers: [{{name: app, command: [sleep], ports: {ports}}}]
{status}
"""


def deployment(
    name: str,
    ns: str = "default",
    replicas: int = 1,
    labels: str = "{app: x}",
    annotations: str = "{}",
    node: str = "node-1",
    ports: str = "[]",
    sa: str = "default",
) -> str:
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {ns}, annotations: {annotations}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {labels}}}
  template:
    metadata: {{labels: {labels}}}
    spec:
      nodeName: {node}
      serviceAccountName: {sa}
      containers: [{{name: app, command: [sleep], ports: {ports}}}]
"""


def service(
    name: str,
    ns: str = "default",
    selector: str = "{app: x}",
    ports: str = "[{port: 80}]",
    cluster_ip: str | None = None,
) -> str:
    ip = f"clusterIP: {cluster_ip}" if cluster_ip else ""
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  selector: {selector}
  ports: {ports}
  {ip}
"""


def service_account(name: str, ns: str = "default") -> str:
    return f"apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {name}, namespace: {ns}}}\n"


def workload_entry(
    name: str, address: str, ns: str = "default", labels: str = "{}", ports: str = "{}"
) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}, namespace: {ns}}}
spec: {{address: {address}, labels: {labels}, ports: {ports}}}
"""
