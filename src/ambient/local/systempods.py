"""The mesh's own processes as pods of ``ambient-system``, as ``kubectl get pods -n
istio-system`` shows Istio's (``ambient up``'s process model: ``controlplane`` and one
``ztunnel-<node>`` per node; ``up --single-process`` has none, it is one process).

Each is described in the shape of ``GET /pods`` (``local.kubelet.Kubelet.describe_pods``)
so that ``ambient get pods`` and ``ambient logs -l`` treat them as any pod.

Decisions (where folder mode has no Kubernetes object to copy):

- Labels are those of Istio's charts that selectors use: a ztunnel pod is ``app:
  ztunnel`` (``kubectl -n istio-system logs -l app=ztunnel`` in the seed guides) with
  ``istio.io/dataplane-mode: none``; the control plane, which plays istiod, is ``app:
  istiod, istio: pilot``.
- A ztunnel pod is owned by the DaemonSet ``ztunnel`` (``kubectl logs ds/ztunnel``),
  runs on its node and answers on the node's address (pod and host IP alike, as
  ztunnel's own listeners do here); the control plane is a bare pod on no node, at
  the control plane's address.
- Ready: the process runs and answers its readiness check (a ztunnel's
  ``:15021/healthz/ready``; the control plane's API socket), as ``ambient status``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ambient.identity.node import CONTROL_PLANE_SERVICE_ACCOUNT, ZTUNNEL_SERVICE_ACCOUNT
from ambient.runtime.spec import PodRun
from ambient.runtime.status import PodRunStatus

__all__ = ["ISTIO_NAMESPACE", "SYSTEM_NAMESPACE", "system_labels", "system_pod_json"]

SYSTEM_NAMESPACE = "ambient-system"
ISTIO_NAMESPACE = "istio-system"
"""Where Istio's own pods are: the CLI accepts it for ``ambient-system``'s pods."""

_ZTUNNEL_LABELS = {"app": "ztunnel", "istio.io/dataplane-mode": "none"}
_CONTROL_PLANE_LABELS = {"app": "istiod", "istio": "pilot"}


def system_labels(name: str) -> dict[str, str]:
    """The labels of the system pod ``name`` (see the module docstring)."""
    return dict(_ZTUNNEL_LABELS if name.startswith("ztunnel-") else _CONTROL_PLANE_LABELS)


def system_pod_json(
    run: PodRun,
    status: PodRunStatus | None,
    *,
    ready: bool,
    created: float | None,
    node: str = "",
    ip: str | None = None,
) -> dict[str, Any]:
    """One system pod in the shape of ``GET /pods`` (with its ``spec``, which no
    manifest holds)."""
    address = ip or run.ip
    containers = [
        {
            "name": c.name,
            "state": c.state.value,
            "restarts": c.restarts,
            "ready": ready and c.state.value == "running",
            "startedAt": c.started_at.timestamp() if c.started_at else None,
            "lastExitCode": c.last_exit_code,
            "message": c.message,
        }
        for c in (status.containers if status is not None else ())
    ]
    ztunnel = run.name.startswith("ztunnel-")
    spec: dict[str, Any] = {
        "containers": [{"name": c.name, "command": list(c.command)} for c in run.containers],
        "serviceAccountName": ZTUNNEL_SERVICE_ACCOUNT if ztunnel else CONTROL_PLANE_SERVICE_ACCOUNT,
    }
    labels: Mapping[str, str] = run.labels or system_labels(run.name)
    return {
        "namespace": run.namespace,
        "name": run.name,
        "ip": address,
        "node": node,
        "workload": "ztunnel" if ztunnel else run.name,
        "workload_type": "daemonset" if ztunnel else "pod",
        "uid": run.uid,
        "labels": dict(labels),
        "serviceAccount": spec["serviceAccountName"],
        "hostIP": address,
        "ready": ready,
        "created": created,
        "containers": containers,
        "spec": spec,
        "system": True,
    }
