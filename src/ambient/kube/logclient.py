"""``ambient logs --kubeconfig``: which pods and containers, read through their nodes.

The pods are found through the API server with the caller's kubeconfig, as kubectl
finds them (so RBAC applies: a caller who may not read the pod gets the API server's
Forbidden); each container's log is then read from the kubelet socket of the pod's
node (``ambient.kube.podexec.kubelet_socket``, the one ``ambient exec`` uses, with the
same gate: see ``ambient.kubelet.logs``). kubectl v1.37's choices:

- ``POD``, ``deploy/NAME`` (``ds/NAME`` too): a workload's pods are those its
  selector picks, one taken as kubectl does (running, ready first, then the oldest)
  with ``Found N pods, using pod/X`` when there are several. The ztunnels of ``ambient
  up`` are per-node pods without a DaemonSet, so ``-n istio-system ds/ztunnel`` takes
  the pods labelled ``app=ztunnel``.
- ``-l SELECTOR``: every matching pod by name (none: ``No resources found in NS
  namespace.``, no error).
- No ``-c``: the ``kubectl.kubernetes.io/default-container`` annotation's, else the
  first, with ``Defaulted container "a" out of: a, b`` when there are several.
- Unknown pod or workload: the API server's ``Error from server (NotFound): pods
  "x" not found``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from ambient.kube.api import KubeClient, KubeError
from ambient.kube.kinds import DAEMONSET, DEPLOYMENT, POD, KindInfo
from ambient.kube.podexec import kubelet_get, kubelet_socket, pick_pod, selector_text

__all__ = ["LogStream", "Resolved", "read", "resolve"]

DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"
_WORKLOADS: dict[str, KindInfo] = {"Deployment": DEPLOYMENT, "DaemonSet": DAEMONSET}


@dataclass(frozen=True)
class LogStream:
    """One container's log, on the node that runs its pod."""

    namespace: str
    pod: str
    uid: str
    container: str
    node: str
    socket: str

    @property
    def prefix(self) -> str:
        """kubectl's ``--prefix``: ``[pod/NAME/CONTAINER] ``."""
        return f"[pod/{self.pod}/{self.container}] "


@dataclass
class Resolved:
    streams: list[LogStream] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """What kubectl says on stderr about its choices (``Found N pods, ...``)."""


def _not_found(plural: str, name: str) -> KubeError:
    return KubeError(f'Error from server (NotFound): {plural} "{name}" not found', 404)


async def _workload_pods(
    client: KubeClient, namespace: str, kind: str, name: str
) -> list[dict[str, Any]]:
    info = _WORKLOADS.get(kind)
    if info is None:
        raise KubeError(f"cannot get logs of a {kind.lower()}: give a pod, deploy/NAME or ds/NAME")
    try:
        workload = await client.get(info.path(namespace, name))
    except KubeError as err:
        if err.code != 404:
            raise
        if kind == "DaemonSet" and name == "ztunnel":  # ``ambient up``'s per-node pods
            pods, _ = await client.list(POD.path(namespace), {"labelSelector": "app=ztunnel"})
            if pods:
                return pods
        raise _not_found(f"{info.plural}{'.' + info.group if info.group else ''}", name) from None
    selector = selector_text((workload.get("spec") or {}).get("selector") or {})
    pods, _ = await client.list(POD.path(namespace), {"labelSelector": selector})
    return pods


def _containers(
    pod: Mapping[str, Any], container: str | None, all_containers: bool, notes: list[str]
) -> list[str]:
    names = [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]
    if all_containers:
        return names
    if container is not None:
        return [container]  # the node says if the pod has no such container
    meta = pod.get("metadata") or {}
    default = str((meta.get("annotations") or {}).get(DEFAULT_CONTAINER, ""))
    if default in names:
        return [default]
    if len(names) > 1:
        notes.append(f'Defaulted container "{names[0]}" out of: {", ".join(names)}')
    return names[:1]


async def resolve(
    client: KubeClient,
    namespace: str,
    *,
    kind: str = "Pod",
    name: str | None = None,
    selector: str | None = None,
    container: str | None = None,
    all_containers: bool = False,
) -> Resolved:
    """The logs ``ambient logs`` reads: pod ``name`` (or a ``kind`` workload's pod), or
    every pod ``selector`` picks; see the module docstring."""
    found = Resolved()
    if selector is not None:
        pods, _ = await client.list(POD.path(namespace), {"labelSelector": selector})
        pods.sort(key=lambda p: p["metadata"]["name"])
        if not pods:
            found.notes.append(f"No resources found in {namespace} namespace.")
    elif kind == "Pod":
        assert name is not None
        try:
            pods = [await client.get(POD.path(namespace, name))]
        except KubeError as err:
            if err.code == 404:
                raise _not_found("pods", name) from None
            raise
    else:
        assert name is not None
        matched = await _workload_pods(client, namespace, kind, name)
        chosen = pick_pod(matched)
        if chosen is None:
            raise KubeError(
                f"{kind.lower()} {namespace}/{name} has no running pod ({len(matched)} pod(s))"
            )
        if len(matched) > 1:
            found.notes.append(f"Found {len(matched)} pods, using pod/{chosen['metadata']['name']}")
        pods = [chosen]
    for pod in pods:
        meta = pod["metadata"]
        node, socket = await kubelet_socket(client, pod, "logs")
        for name_ in _containers(pod, container, all_containers, found.notes):
            found.streams.append(
                LogStream(namespace, meta["name"], meta.get("uid", ""), name_, node, socket)
            )
    return found


async def read(
    stream: LogStream,
    *,
    tail: int | None = None,
    since: datetime | None = None,
    offset: int | None = None,
) -> tuple[list[str], int]:
    """One read of ``stream`` from its node (``ambient.runtime.podlogs.read_lines``):
    its lines and the offset to read on from. ``KubeError`` with ``code`` 404 when the
    pod no longer runs there."""
    query: dict[str, str] = {
        "namespace": stream.namespace,
        "name": stream.pod,
        "uid": stream.uid,
        "container": stream.container,
    }
    if tail is not None:
        query["tail"] = str(tail)
    if since is not None:
        query["since"] = since.isoformat()
    if offset is not None:
        query["offset"] = str(offset)
    answer = await kubelet_get(stream.node, stream.socket, f"/logs?{urlencode(query)}")
    if not isinstance(answer, dict):
        raise KubeError(f"node {stream.node}'s kubelet: a log answer that is not an object")
    return [str(line) for line in answer.get("lines") or []], int(answer.get("offset") or 0)
