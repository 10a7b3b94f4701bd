"""One record per request (and per passed-through TCP tunnel): its metrics and access-log line.

The line follows ztunnel's ``key=value`` style (``ambient.ztunnel.metrics``),
logged on ``ambient.access`` at INFO, as Envoy writes every access-log entry
(the response flags tell a failure: ``UF``, ``UT``...; ``ambient zc log --level
access=off`` silences them, and the node proxy's log names the waypoint)::

    request complete src.addr=127.1.0.5:40112 src.workload="web" src.namespace="shop"
      src.identity="spiffe://cluster.local/ns/shop/sa/web" dst.addr=127.1.0.7:8080
      dst.service="orders.shop.svc.cluster.local" dst.workload="orders-v1"
      dst.namespace="shop" dst.identity="spiffe://cluster.local/ns/shop/sa/orders"
      method=GET path="/api" host="orders:8080" protocol=HTTP/1.1 status=200
      response_flags="-" route="default" request_id="6f9c..." bytes_sent=120
      bytes_recv=0 duration="2ms"

A gRPC request's line adds ``grpc_status=<code>`` (Envoy's
``%GRPC_STATUS_NUMBER%``: from the response trailers, or the head of a
trailers-only answer, or the waypoint's own answer; ``-`` when the stream
ended without one).

Response flags are Envoy's (several are joined with ``,`` in Envoy's order):
``UH`` no healthy upstream, ``UF`` upstream connection failure, ``UT``
upstream request timeout, ``UC`` upstream connection termination, ``UR``
upstream remote reset (an HTTP/2 upstream reset the stream), ``UO``
upstream overflow (circuit breaking), ``URX`` retries exhausted, ``DI``
delayed and ``FI`` aborted by fault injection, ``NR`` no route, ``DC``
downstream connection termination, ``DPE`` downstream protocol error; ``-``
none (as for RBAC and JWT denials, whose reason goes in ``details``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ambient.ipparse import address_text
from ambient.state.workload import Service, Workload
from ambient.waypoint.model import Downstream, Target
from ambient.waypoint.proxy.metrics import WaypointMetrics, label_values

if TYPE_CHECKING:
    from ambient.config.telemetry import EffectiveTelemetry

access_log = logging.getLogger("ambient.access")

__all__ = ["RequestRecord", "TunnelRecord", "access_log"]


def _source_addr(downstream: Downstream) -> str:
    return address_text(downstream.source_ip, downstream.source_port)


def _target_text(target: Target) -> str:
    return target.hostname or str(target.address)


@dataclass(slots=True)
class RequestRecord:
    """Everything known about one proxied HTTP request."""

    metrics: WaypointMetrics
    target: Target
    downstream: Downstream
    source: Workload | None
    protocol: str  # HTTP/1.1 | HTTP/2
    method: str = ""
    path: str = ""
    authority: str = ""
    request_id: str = ""
    grpc: bool = False
    route: str = ""
    cluster: str = "-"  # Envoy's upstream cluster: outbound|port|subset|host
    service: Service | None = None
    destination: Workload | None = None
    upstream_addr: str = ""
    status: int = 0
    grpc_status: str = ""
    flags: str = "-"
    details: str = ""
    request_bytes: int = 0
    response_bytes: int = 0
    started: float = field(default_factory=time.monotonic)
    done: bool = False
    # The Telemetry in force when the request came (None: log and count everything).
    telemetry: EffectiveTelemetry | None = None

    def finish(self) -> None:
        """Count the request and write its access-log line (once)."""
        if self.done:
            return
        self.done = True
        duration_ms = (time.monotonic() - self.started) * 1000
        dst = self.destination
        source_principal = self.downstream.principal
        key = (
            self.source.uid if self.source else None,
            source_principal,
            dst.uid if dst else None,
            self.service.key if self.service else _target_text(self.target),
            self.grpc,
            self.status,
            self.grpc_status,
            self.flags,
        )

        def labels() -> dict[str, str]:  # only on a label-cache miss
            values = label_values(
                source=self.source,
                source_principal=source_principal,
                destination=dst,
                destination_principal=str(dst.identity) if dst else None,
                service=self.service,
                service_fallback=_target_text(self.target),
                request_protocol="grpc" if self.grpc else "http",
                response_flags=self.flags,
            )
            values["response_code"] = str(self.status)
            values["grpc_response_status"] = self.grpc_status
            return values

        telemetry = self.telemetry
        self.metrics.observe_request(
            key,
            labels,
            duration_ms=duration_ms,
            request_bytes=self.request_bytes,
            response_bytes=self.response_bytes,
            disabled=telemetry.disabled_metrics if telemetry is not None else frozenset(),
        )
        if telemetry is not None and not telemetry.logs(self.status):
            return
        if access_log.isEnabledFor(logging.INFO):
            destination_principal = str(dst.identity) if dst else None
            line = self._line(duration_ms, source_principal, destination_principal)
            access_log.info("request complete %s", line)

    def _line(self, duration_ms: float, src_id: str | None, dst_id: str | None) -> str:
        src, dst = self.source, self.destination
        fields = [
            f"src.addr={_source_addr(self.downstream)}",
            _quoted("src.workload", src.workload_name or src.name if src else None),
            _quoted("src.namespace", src.namespace if src else None),
            _quoted("src.identity", src_id),
            f"dst.addr={self.upstream_addr}" if self.upstream_addr else "",
            _quoted("dst.service", self.service.hostname if self.service else self.target.hostname),
            _quoted("dst.workload", dst.name if dst else None),
            _quoted("dst.namespace", dst.namespace if dst else None),
            _quoted("dst.identity", dst_id),
            f"method={self.method}",
            _quoted("path", self.path),
            _quoted("host", self.authority),
            f"protocol={self.protocol}",
            f"status={self.status}",
            f"grpc_status={self.grpc_status or '-'}" if self.grpc else "",
            f'response_flags="{self.flags}"',
            _quoted("details", self.details),
            _quoted("route", self.route),
            _quoted("request_id", self.request_id),
            f"bytes_sent={self.response_bytes}",
            f"bytes_recv={self.request_bytes}",
            f'duration="{duration_ms:.0f}ms"',
        ]
        return " ".join(f for f in fields if f)


@dataclass(slots=True)
class TunnelRecord:
    """One tunnel passed through as TCP: istio_tcp_* metrics and a ``connection complete`` line."""

    metrics: WaypointMetrics
    target: Target
    downstream: Downstream
    source: Workload | None
    service: Service | None = None
    destination: Workload | None = None
    upstream_addr: str = ""
    flags: str = "-"
    error: str = ""
    bytes_sent: int = 0  # towards the client
    bytes_received: int = 0  # from the client
    started: float = field(default_factory=time.monotonic)
    _opened: bool = False

    def _children(self) -> tuple[object, object, object, object]:
        src_id = str(self.downstream.peer_identity) if self.downstream.peer_identity else None
        dst = self.destination
        key = (
            self.source.uid if self.source else None,
            src_id,
            dst.uid if dst else None,
            self.service.key if self.service else _target_text(self.target),
            self.flags,
        )
        return self.metrics.tcp_children(
            key,
            lambda: label_values(
                source=self.source,
                source_principal=src_id,
                destination=dst,
                destination_principal=str(dst.identity) if dst else None,
                service=self.service,
                service_fallback=_target_text(self.target),
                request_protocol="tcp",
                response_flags=self.flags,
            ),
        )

    def open(self) -> None:
        if not self._opened:
            self._opened = True
            self._children()[0].inc()  # type: ignore[attr-defined]

    def close(self) -> None:
        self.open()
        _, closed, sent, received = self._children()
        closed.inc()  # type: ignore[attr-defined]
        sent.inc(self.bytes_sent)  # type: ignore[attr-defined]
        received.inc(self.bytes_received)  # type: ignore[attr-defined]
        duration_ms = (time.monotonic() - self.started) * 1000
        dst = self.destination
        fields = [
            f"src.addr={_source_addr(self.downstream)}",
            _quoted("src.identity", str(self.downstream.peer_identity or "")),
            f"dst.addr={self.upstream_addr}" if self.upstream_addr else "",
            _quoted("dst.service", self.service.hostname if self.service else self.target.hostname),
            _quoted("dst.workload", dst.name if dst else None),
            _quoted("dst.identity", str(dst.identity) if dst else None),
            "protocol=tcp",
            f'response_flags="{self.flags}"',
            f"bytes_sent={self.bytes_sent}",
            f"bytes_recv={self.bytes_received}",
            f'duration="{duration_ms:.0f}ms"',
            _quoted("error", self.error),
        ]
        line = " ".join(f for f in fields if f)
        level = logging.ERROR if self.error else logging.INFO  # as ztunnel's access target
        if access_log.isEnabledFor(level):
            access_log.log(level, "connection complete %s", line)


def _quoted(key: str, value: str | None) -> str:
    return f'{key}="{value}"' if value else ""
