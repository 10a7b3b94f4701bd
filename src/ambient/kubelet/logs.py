"""A node's container logs, as its kubelet serves them to ``ambient logs --kubeconfig``.

The kubelet's ``/containerLogs/NS/POD/CONTAINER`` in the project's terms: the node's
runtime writes each container's output to ``STATE/logs/NS_POD_CONTAINER.log``
(``ambient.runtime.podlogs`` reads them), and the kubelet socket
(``ambient.local.kubeletapi``) answers one read at a time: the last lines, or what
was appended after an offset (``-f`` asks again with the offset it was given).

Decisions:

- The pod must be one this node runs *now* and have the uid the caller resolved
  through the API server: a pod that is gone or was replaced under the same name
  is refused (404), so that ``-f`` ends when its pod is gone and never reads a
  newer pod's log for an older one's name.
- A waypoint pod (``gateway.networking.k8s.io/gateway-class-name: istio-waypoint``)
  has no proxy process of its own: the node proxy of its node serves the waypoint
  on the pod's address (``ambient.kube.waypoints``), and tags what it logs for it
  with ``[NS/GATEWAY]``. Its log is therefore those lines of its node's ztunnel pod
  (``istio-system/ztunnel-NODE``), access lines included, as Istio's waypoint pod's
  log is its Envoy's; ``-c istio-proxy`` (Istio's container name) names it too.
- Authorisation is the socket's: only the host's user that runs the nodes can open
  it (mode 0600), the same gate as ``ambient exec``. The kubelet authorises
  ``/containerLogs`` and ``/exec`` alike (both are ``nodes/proxy``), so logs are not
  given to anyone exec is refused to.
"""

from __future__ import annotations

from ambient.config.gateway import WAYPOINT_CLASS
from ambient.kube.waypoints import LABEL_GATEWAY_CLASS, LABEL_GATEWAY_NAME
from ambient.kubelet.pods import NodePods
from ambient.kubelet.ztunnel import ZTUNNEL_NAMESPACE, pod_name
from ambient.runtime.podlogs import LogSource

__all__ = ["ISTIO_PROXY", "LogRefused", "pod_log_source"]

ISTIO_PROXY = "istio-proxy"
"""Istio's name of its proxies' container (ztunnel's, a waypoint's)."""


class LogRefused(LookupError):
    """No such log here; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 404) -> None:
        super().__init__(message)
        self.status = status


def pod_log_source(
    pods: NodePods, namespace: str, name: str, uid: str, container: str
) -> LogSource:
    """The log of ``container`` of pod ``namespace/name`` (of that ``uid``) on this node."""
    running = pods.pods.get((namespace, name))
    if running is None:
        raise LogRefused(f"pod {namespace}/{name} does not run on node {pods.node}")
    pod = running.pod
    if uid and pod.uid != uid:
        raise LogRefused(
            f"pod {namespace}/{name} on node {pods.node} is not the one asked for (replaced?)"
        )
    names = [c.spec.name for c in pod.containers]
    waypoint = pod.labels.get(LABEL_GATEWAY_CLASS) == WAYPOINT_CLASS
    if container not in names and not (waypoint and container == ISTIO_PROXY):
        raise LogRefused(f"container {container} is not valid for pod {name}", 400)
    if waypoint:
        gateway = pod.labels.get(LABEL_GATEWAY_NAME) or name
        proxy = pod_name(pods.node)
        ztunnel = pods.pods.get((ZTUNNEL_NAMESPACE, proxy))
        proxy_container = ztunnel.pod.containers[0].spec.name if ztunnel else ISTIO_PROXY
        path = pods.supervisor.log_path(ZTUNNEL_NAMESPACE, proxy, proxy_container)
        return LogSource(name, container, path, workload=f"{namespace}/{gateway}")
    system = pods.system is not None and pods.system(pod)
    path = pods.runtime(pod).log_path(namespace, name, container)
    return LogSource(name, container, path, system=system)
