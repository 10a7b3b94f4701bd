"""Non-HTTP traffic through the waypoint: L4 policy, then spliced to an endpoint over HBONE.

Decisions: the L4 check is ``RequestAuthorizer.check_connection``; a denial
resets the tunnel (the CONNECT was already answered 200, as Envoy's
waypoint answers before its inner listener sees the bytes) and is counted
with ``response_flags="DENY"`` like ztunnel's L4 denials. A service target is
load balanced round robin over its endpoints on the addressed port (no TCP
routes in the contract); a workload target goes to that workload. The bytes
read while sniffing are sent first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from ambient.hbone.errors import HboneError
from ambient.hbone.stream import HboneStream
from ambient.waypoint.model import Backend
from ambient.waypoint.proxy.accesslog import TunnelRecord
from ambient.waypoint.proxy.balancer import Endpoint
from ambient.waypoint.proxy.upstream import UpstreamFailed

if TYPE_CHECKING:
    from ambient.waypoint.proxy.server import Tunnel

log = logging.getLogger("ambient.waypoint")

__all__ = ["pass_through"]

READ_SIZE = 256 * 1024


async def pass_through(tunnel: Tunnel, initial: bytes) -> None:
    waypoint = tunnel.waypoint
    target = tunnel.target
    record = TunnelRecord(waypoint.metrics, target, tunnel.downstream, tunnel.source)
    verdict = waypoint.policies.authorizer.check_connection(target, tunnel.downstream)
    if not verdict.allowed:
        log.info(
            "RBAC rejected conn=%s(%s)->%s: %s",
            tunnel.downstream.source_ip,
            tunnel.downstream.peer_identity,
            tunnel.stream.request.authority,
            verdict.reason or verdict.policy or "denied by policy",
        )
        record.flags, record.error = "DENY", "connection closed due to policy rejection"
        tunnel.stream.reset()
        record.close()
        return
    endpoint = _pick(tunnel, record)
    if endpoint is None:
        record.flags, record.error = "UH", "no healthy upstream"
        tunnel.stream.reset()
        record.close()
        return
    record.destination, record.upstream_addr = endpoint.workload, endpoint.address
    try:
        upstream = await waypoint.open_tunnel(endpoint)
    except UpstreamFailed as exc:
        record.flags, record.error = exc.flag, str(exc)
        tunnel.stream.reset()
        record.close()
        return
    record.open()
    try:
        if initial:
            upstream.write(initial)
            record.bytes_received += len(initial)
        up, down = await asyncio.gather(
            _pump(tunnel.stream, upstream), _pump(upstream, tunnel.stream), return_exceptions=True
        )
        record.bytes_received += up if isinstance(up, int) else 0
        record.bytes_sent = down if isinstance(down, int) else 0
        errors = [e for e in (up, down) if isinstance(e, BaseException)]
        if errors:
            record.error = str(errors[0])
    except HboneError as exc:
        record.error = str(exc)
    finally:
        for stream in (tunnel.stream, upstream):
            if not stream.closed and record.error:
                stream.reset()
        record.close()


def _pick(tunnel: Tunnel, record: TunnelRecord) -> Endpoint | None:
    waypoint, target = tunnel.waypoint, tunnel.target
    if target.hostname is None:
        workload = waypoint.state.workload_by_ip(target.address)
        if workload is None:
            return None
        return Endpoint(workload, target.address, target.port)
    backend = Backend(target.namespace, target.hostname, target.port)
    record.service = waypoint.state.services.get(backend.service_key)
    return waypoint.forwarder.pick(backend)


async def _pump(source: HboneStream, sink: HboneStream) -> int:
    """Copy until end of stream (then half-close); a reset on one side resets the other."""
    total = 0
    try:
        while chunk := await source.read(READ_SIZE):
            total += len(chunk)
            sink.write(chunk)
            await sink.drain()
    except HboneError:
        with contextlib.suppress(HboneError):
            sink.reset()
        raise
    sink.write_eof()
    return total
