"""ztunnel's TCP metrics and access log, with Istio's names and labels.

One :class:`ConnectionRecord` per proxied connection: opening it counts
``istio_tcp_connections_opened_total``; closing it counts
``istio_tcp_connections_closed_total``, adds the bytes to
``istio_tcp_sent_bytes_total`` / ``istio_tcp_received_bytes_total`` and writes
one access-log line in ztunnel's ``key=value`` form.

Levels as ztunnel's ``access`` target (``src/proxy/metrics.rs``), on the
``ambient.access`` logger (``ambient zc log --level access=...``): ``connection
complete`` at INFO, at ERROR when the connection failed (with ``error=``);
``connection opened`` at DEBUG.
"""

from __future__ import annotations

import logging
import time
import weakref
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from ambient.monitoring.exposition import disable_created
from ambient.state.workload import Service, Workload

access_log = logging.getLogger("ambient.access")

disable_created()  # Istio emits no _created series

LABELS = (
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_service",
    "destination_service_namespace",
    "destination_service_name",
    "destination_workload",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_cluster",
    "request_protocol",
    "response_flags",
    "connection_security_policy",
)

UNKNOWN = "unknown"


class Direction(Enum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class ResponseFlags(Enum):
    NONE = "-"
    DENY = "DENY"  # refused by authorization policy
    CONNECT = "CONNECT"  # upstream connection failed


class Metrics:
    """The Prometheus counters of one ztunnel (its own registry, served on :15020).

    ``children`` caches the four labelled counters per label set: resolving
    labels in prometheus_client costs tens of microseconds, paid per connection.
    ``children_of`` finds them per peer pair (the very source, destination and
    service objects, identities, flags) without building the 23 labels again.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.opened = Counter(
            "istio_tcp_connections_opened",
            "The total number of TCP connections opened",
            LABELS,
            registry=self.registry,
        )
        self.closed = Counter(
            "istio_tcp_connections_closed",
            "The total number of TCP connections closed",
            LABELS,
            registry=self.registry,
        )
        self.sent = Counter(
            "istio_tcp_sent_bytes",
            "The size of total bytes sent during response in case of a TCP connection",
            LABELS,
            registry=self.registry,
        )
        self.received = Counter(
            "istio_tcp_received_bytes",
            "The size of total bytes received during request in case of a TCP connection",
            LABELS,
            registry=self.registry,
        )
        self._children: dict[tuple[str, ...], tuple[Any, Any, Any, Any]] = {}
        self._pairs: dict[tuple[Any, ...], _Pair] = {}
        # Connections open now (``zc connections``); weak, so one never closed cannot leak.
        self.live: weakref.WeakValueDictionary[int, ConnectionRecord] = (
            weakref.WeakValueDictionary()
        )

    def children(self, labels: dict[str, str]) -> tuple[Any, Any, Any, Any]:
        """(opened, closed, sent, received) counters for one label set.

        Every label value comes from the workload/service state or a small enum, never
        from a connection (address, port), so the label sets are as many as the
        (source, destination) pairs that talk, not as the connections."""
        key = tuple(labels.values())
        found = self._children.get(key)
        if found is None:
            found = (
                self.opened.labels(**labels),
                self.closed.labels(**labels),
                self.sent.labels(**labels),
                self.received.labels(**labels),
            )
            if len(self._children) < 100_000:  # bounded: label sets come from workloads
                self._children[key] = found
        return found

    def children_of(self, record: ConnectionRecord) -> tuple[Any, Any, Any, Any]:
        """``children(record.labels())``, remembered per peer pair.

        The key holds the objects' ids; an entry also holds the objects themselves, so
        an id is not reused while its entry lives, and a hit must be the very objects
        (a pushed workload is a new object: its labels are computed again)."""
        src, dst, svc = record.source, record.destination, record.service
        key = (
            record.direction,
            id(src),
            id(dst),
            id(svc),
            record.source_identity,
            record.destination_identity,
            record.flags,
            record.mtls,
        )
        found = self._pairs.get(key)
        if found is not None and found[0] is src and found[1] is dst and found[2] is svc:
            return found[3]
        children = self.children(record.labels())
        if len(self._pairs) >= PAIRS_KEPT:  # old workload objects are not kept for ever
            self._pairs.clear()
        self._pairs[key] = (src, dst, svc, children)
        return children


PAIRS_KEPT = 4096
_Pair = tuple[Workload | None, Workload | None, Service | None, tuple[Any, Any, Any, Any]]


@dataclass
class ConnectionRecord:
    """Everything known about one proxied connection, for its metrics and access-log line."""

    metrics: Metrics
    direction: Direction
    src_addr: str
    dst_addr: str
    source: Workload | None = None
    source_identity: str | None = None
    destination: Workload | None = None
    destination_identity: str | None = None
    service: Service | None = None
    hbone_addr: str | None = None  # the :authority on an HBONE hop
    original_dst: str | None = None  # what the client asked for (outbound)
    mtls: bool = False
    flags: ResponseFlags = ResponseFlags.NONE
    bytes_sent: int = 0  # towards the client that opened the connection
    bytes_received: int = 0  # from that client
    error: str | None = None
    started: float = field(default_factory=time.monotonic)
    _labels: dict[str, str] | None = None
    _children: tuple[Any, Any, Any, Any] | None = None
    _opened: bool = False

    def open(self) -> None:
        """Count the connection as opened (once)."""
        if not self._opened:
            self._opened = True
            self.metrics.live[id(self)] = self
            self._children = self.metrics.children_of(self)
            self._children[0].inc()
            if access_log.isEnabledFor(logging.DEBUG):
                access_log.debug(
                    "connection opened src.addr=%s dst.addr=%s direction=%s",
                    self.src_addr,
                    self.dst_addr,
                    self.direction.value,
                )

    def close(self) -> None:
        """Count bytes and the close, and write the access-log line."""
        self.open()
        self.metrics.live.pop(id(self), None)
        assert self._children is not None
        _, closed, sent, received = self._children
        closed.inc()
        if self.bytes_sent:
            sent.inc(self.bytes_sent)
        if self.bytes_received:
            received.inc(self.bytes_received)
        if self.error or access_log.isEnabledFor(logging.INFO):
            self._log()

    def labels(self) -> dict[str, str]:
        if self._labels is None:
            self._labels = self._compute_labels()
        return self._labels

    def _compute_labels(self) -> dict[str, str]:
        src, dst, svc = self.source, self.destination, self.service
        return {
            "reporter": "destination" if self.direction is Direction.INBOUND else "source",
            "source_workload": src.workload_name if src else UNKNOWN,
            "source_canonical_service": src.canonical_name if src else UNKNOWN,
            "source_canonical_revision": src.canonical_revision if src else UNKNOWN,
            "source_workload_namespace": src.namespace if src else UNKNOWN,
            "source_principal": self.source_identity or UNKNOWN,
            "source_app": src.canonical_name if src else UNKNOWN,
            "source_version": src.canonical_revision if src else UNKNOWN,
            "source_cluster": src.cluster_id if src else UNKNOWN,
            # Not the address when there is no service (passthrough to anywhere): one label
            # set per address dialled would grow the registry for ever. Istio's ztunnel
            # says "unknown" too; the access log still names the address.
            "destination_service": svc.hostname if svc else UNKNOWN,
            "destination_service_namespace": svc.namespace if svc else UNKNOWN,
            "destination_service_name": svc.name if svc else UNKNOWN,
            "destination_workload": dst.workload_name if dst else UNKNOWN,
            "destination_canonical_service": dst.canonical_name if dst else UNKNOWN,
            "destination_canonical_revision": dst.canonical_revision if dst else UNKNOWN,
            "destination_workload_namespace": dst.namespace if dst else UNKNOWN,
            "destination_principal": self.destination_identity or UNKNOWN,
            "destination_app": dst.canonical_name if dst else UNKNOWN,
            "destination_version": dst.canonical_revision if dst else UNKNOWN,
            "destination_cluster": dst.cluster_id if dst else UNKNOWN,
            "request_protocol": "tcp",
            "response_flags": self.flags.value,
            "connection_security_policy": "mutual_tls" if self.mtls else UNKNOWN,
        }

    def _log(self) -> None:
        duration_ms = (time.monotonic() - self.started) * 1000
        fields = [
            f"src.addr={self.src_addr}",
            _quoted("src.workload", self.source.name if self.source else None),
            _quoted("src.namespace", self.source.namespace if self.source else None),
            _quoted("src.identity", self.source_identity),
            f"dst.addr={self.dst_addr}",
            f"dst.hbone_addr={self.hbone_addr}" if self.hbone_addr else "",
            _quoted("dst.service", self.service.hostname if self.service else None),
            _quoted("dst.workload", self.destination.name if self.destination else None),
            _quoted("dst.namespace", self.destination.namespace if self.destination else None),
            _quoted("dst.identity", self.destination_identity),
            f'direction="{self.direction.value}"',
            f"bytes_sent={self.bytes_sent}",
            f"bytes_recv={self.bytes_received}",
            f'duration="{duration_ms:.0f}ms"',
            _quoted("error", self.error),
        ]
        line = " ".join(f for f in fields if f)
        if self.error:
            access_log.error("connection complete %s", line)
        else:
            access_log.info("connection complete %s", line)


def _quoted(key: str, value: str | None) -> str:
    return f'{key}="{value}"' if value else ""
