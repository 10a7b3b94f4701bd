"""Whether a pod the CNI plugin reports is in the mesh: asked of the API server.

istio-cni's plugin and its agent both read the pod and its namespace from the API
server; here only the agent does (``ambient.cni.plugin``: the plugin holds no
credentials). For a pod reported by the runtime of node N:

- the pod must exist, be bound to N (``spec.nodeName``: an agent serves its own node's
  pods only) and, when the runtime gave ``K8S_POD_UID``, have that uid (a pod deleted
  and re-created under the same name is another pod);
- it is enrolled as the control plane decides (``controlplane.index.tunnel_protocol``:
  the pod's ``istio.io/dataplane-mode`` label, else its namespace's; ``ambient``
  enrolls), unless it uses the host's network.

Fresh ``GET``s, no cache: the pod was bound a moment ago, and a watch cache could lag
behind it; two small requests per pod start are cheap. An API server that cannot be
reached is ``503`` (the plugin tells the runtime to try again later), the agent's own
RBAC refusing is ``500`` naming the ClusterRole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

from ambient.controlplane.workloads import tunnel_protocol
from ambient.kube.api import Forbidden, KubeClient, KubeError, NotFound, Unreachable
from ambient.nodeagent.pluginevents import PodEvent, Refused
from ambient.state.workload import TunnelProtocol

__all__ = ["Enrollment", "KubeEnrollment", "Verdict"]


@dataclass(frozen=True)
class Verdict:
    """What the agent does with a reported pod."""

    enrolled: bool
    uid: str
    reason: str


class Enrollment(Protocol):
    async def decide(self, event: PodEvent) -> Verdict:
        """The pod's verdict, or :class:`Refused` (with the HTTP status to answer)."""


class KubeEnrollment:
    """Asks the API server (see the module docstring)."""

    def __init__(self, client: KubeClient, node: str) -> None:
        self.client = client
        self.node = node

    async def _get(self, path: str, what: str) -> dict[str, Any]:
        try:
            found = await self.client.get(path)
        except NotFound:
            raise Refused(404, f"{what} does not exist (deleted meanwhile?)") from None
        except Forbidden as err:
            raise Refused(
                500, f"the node agent may not read {what} ({err}): see its ClusterRole"
            ) from None
        except Unreachable as err:
            raise Refused(503, f"cannot ask the API server about {what}: {err}") from None
        except KubeError as err:
            raise Refused(503, f"the API server failed to answer about {what}: {err}") from None
        if not isinstance(found, dict):
            raise Refused(503, f"the API server answered no object for {what}")
        return found

    async def decide(self, event: PodEvent) -> Verdict:
        ns, name = event.pod_namespace, event.pod_name
        pod = await self._get(
            f"/api/v1/namespaces/{quote(ns)}/pods/{quote(name)}", f"pod {event.pod}"
        )
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        uid = str(meta.get("uid", ""))
        if event.pod_uid and uid != event.pod_uid:
            raise Refused(409, f"pod {event.pod} is now uid {uid}, not {event.pod_uid}")
        bound = spec.get("nodeName")
        if bound != self.node:
            raise Refused(
                403, f"pod {event.pod} is bound to node {bound!r}, this agent serves {self.node!r}"
            )
        if spec.get("hostNetwork"):
            return Verdict(False, uid, "host network")
        namespace = await self._get(f"/api/v1/namespaces/{quote(ns)}", f"namespace {ns}")
        labels = meta.get("labels") or {}
        ns_labels = (namespace.get("metadata") or {}).get("labels") or {}
        enrolled = tunnel_protocol(labels, ns_labels) is TunnelProtocol.HBONE
        return Verdict(enrolled, uid, "istio.io/dataplane-mode" if enrolled else "not enrolled")
