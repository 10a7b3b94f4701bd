"""A mesh pod's metrics and readiness ports, read by its node for callers outside the pod network.

With ``ambient up --kubeconfig --netns`` a waypoint pod's address is inside its own
network namespace (its node proxy serves the waypoint there), so a process on the host
(``ambient dashboard --kubeconfig``) cannot scrape its ``:15020``. Kubernetes gives an
operator outside the pod network the API server's pod proxy
(``/api/v1/namespaces/NS/pods/NAME:PORT/proxy/PATH``, relayed to the pod through its
node); here the node's kubelet socket (``ambient.local.kubeletapi``, ``GET /podport``)
makes the one request from where the pod's traffic starts, as its probes do
(``PodNetwork.dialer``: inside the pod's namespace, marked so that the pod's
redirection leaves it alone).

Decisions:

- Only the mesh's own ports of the mesh's own pods, and fail closed on anything else
  (403): a waypoint pod (``gateway.networking.k8s.io/gateway-class-name:
  istio-waypoint``) or the node's ztunnel pod; ``15020`` with ``/metrics`` or
  ``/stats/prometheus``, ``15021`` with ``/healthz/ready``. The socket is the same
  privilege as ``exec`` (``nodes/proxy`` to a kubelet), but this route is not a
  general proxy to applications' ports.
- The pod must be one this node runs now, with the uid the caller resolved through
  the API server (a replaced pod is never answered for the old one's name), as logs.
- One ``GET`` per call, ``Connection: close``, at most ``MAX_BODY`` bytes; the answer
  is the port's status, content type and text (the kubelet socket speaks JSON).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from ambient.config.gateway import WAYPOINT_CLASS
from ambient.kube.waypoints import LABEL_GATEWAY_CLASS
from ambient.kubelet.logs import LogRefused
from ambient.kubelet.pods import NodePods
from ambient.kubelet.ztunnel import ZTUNNEL_NAMESPACE, pod_name

__all__ = ["ALLOWED", "MAX_BODY", "read_pod_port"]

ALLOWED: dict[int, frozenset[str]] = {
    15020: frozenset({"/metrics", "/stats/prometheus"}),
    15021: frozenset({"/healthz/ready"}),
}
"""The ports (and their paths) a caller may read: Istio's metrics and readiness ports."""
MAX_BODY = 64 * 1024 * 1024


async def read_pod_port(
    pods: NodePods,
    namespace: str,
    name: str,
    uid: str,
    port: int,
    path: str,
    timeout: float = 5.0,
) -> dict[str, Any]:
    """``GET path`` on ``port`` of pod ``namespace/name`` (of that ``uid``) on this node:
    ``{"status", "content_type", "text"}``. ``LogRefused`` (with its HTTP status) when the
    pod, port or path is not one this allows, or the port does not answer."""
    running = pods.pods.get((namespace, name))
    if running is None:
        raise LogRefused(f"pod {namespace}/{name} does not run on node {pods.node}")
    pod = running.pod
    if not uid or pod.uid != uid:
        raise LogRefused(
            f"pod {namespace}/{name} on node {pods.node} is not the one asked for (replaced?)"
        )
    waypoint = pod.labels.get(LABEL_GATEWAY_CLASS) == WAYPOINT_CLASS
    ztunnel = (namespace, name) == (ZTUNNEL_NAMESPACE, pod_name(pods.node))
    if not (waypoint or ztunnel):
        raise LogRefused(
            f"pod {namespace}/{name} is not a mesh proxy (a waypoint or the node's ztunnel): "
            "only their metrics and readiness ports are served",
            403,
        )
    if path not in ALLOWED.get(port, frozenset()):
        allowed = ", ".join(f"{p} {' '.join(sorted(a))}" for p, a in sorted(ALLOWED.items()))
        raise LogRefused(f"port {port} path {path!r} is not served (only {allowed})", 403)
    dial = pods.network(pod).dialer(pod, running.ip)
    host = f"[{running.ip}]" if ":" in running.ip else running.ip
    try:
        async with asyncio.timeout(timeout):
            sock = await dial(running.ip, port)
            reader, writer = await asyncio.open_connection(sock=sock)
            try:
                request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
                writer.write(request.encode("ascii"))
                await writer.drain()
                data = bytearray()
                while chunk := await reader.read(64 * 1024):
                    data += chunk
                    if len(data) > MAX_BODY + 64 * 1024:  # the body and a head
                        raise LogRefused(f"{namespace}/{name}:{port}{path}: answer too large", 502)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError) as err:
        reason = str(err) or type(err).__name__
        raise LogRefused(f"{namespace}/{name}:{port}{path} did not answer: {reason}", 502) from None
    return _response(bytes(data), f"{namespace}/{name}:{port}{path}")


def _response(data: bytes, what: str) -> dict[str, Any]:
    head, sep, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if not sep or len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise LogRefused(f"{what} answered no HTTP response", 502)
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise LogRefused(f"{what} answered a chunked body (not read here)", 502)
    length = headers.get("content-length", "")
    if length.isdigit():
        body = body[: int(length)]
    if len(body) > MAX_BODY:
        raise LogRefused(f"{what}: answer larger than {MAX_BODY} bytes", 502)
    return {
        "status": int(parts[1]),
        "content_type": headers.get("content-type", ""),
        "text": body.decode("utf-8", "replace"),
    }
