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
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric

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


FAMILIES = (
    ("istio_tcp_connections_opened", "The total number of TCP connections opened"),
    ("istio_tcp_connections_closed", "The total number of TCP connections closed"),
    (
        "istio_tcp_sent_bytes",
        "The size of total bytes sent during response in case of a TCP connection",
    ),
    (
        "istio_tcp_received_bytes",
        "The size of total bytes received during request in case of a TCP connection",
    ),
)
OPENED, CLOSED, SENT, RECEIVED = range(4)
Cell = list[int]
"""One label set's four counts, indexed by ``OPENED``, ``CLOSED``, ``SENT``, ``RECEIVED``."""


class Metrics:
    """The TCP counters of one ztunnel (its own registry, served on :15020).

    The four counters of a label set are one :data:`Cell` of plain integers, added to
    on the event loop's thread and read by the registry's collector at a scrape (as
    ``prometheus_client`` counters, without a lock and a method call per increment).
    ``cell`` finds a label set's cell; ``cell_of`` finds it per peer pair (the very
    source, destination and service objects, identities, flags) without building the
    23 labels again.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._cells: dict[tuple[str, ...], Cell] = {}
        self._pairs: dict[tuple[Any, ...], _Pair] = {}
        self._log_parts: dict[
            tuple[Any, ...],
            tuple[Workload | None, Workload | None, Service | None, tuple[str, str]],
        ] = {}
        self.registry.register(_TcpCollector(self._cells))
        # Connections open now (``zc connections``): a record is here from ``open`` to
        # ``close`` (every handler closes its records in a ``finally``).
        self.live: dict[int, ConnectionRecord] = {}

    def cell(self, labels: dict[str, str]) -> Cell:
        """The counts of one label set.

        Every label value comes from the workload/service state or a small enum, never
        from a connection (address, port), so the label sets are as many as the
        (source, destination) pairs that talk, not as the connections. Past 100,000 label
        sets a new one is counted but not exposed (the registry stays bounded)."""
        key = tuple(labels.values())
        found = self._cells.get(key)
        if found is None:
            found = [0, 0, 0, 0]
            if len(self._cells) < 100_000:  # bounded: label sets come from workloads
                self._cells[key] = found
        return found

    def cell_of(self, record: ConnectionRecord) -> Cell:
        """``cell(record.labels())``, remembered per peer pair.

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
        cell = self.cell(record.labels())
        if len(self._pairs) >= PAIRS_KEPT:  # old workload objects are not kept for ever
            self._pairs.clear()
        self._pairs[key] = (src, dst, svc, cell)
        return cell

    def log_parts(self, record: ConnectionRecord) -> tuple[str, str]:
        """The access-log fields of ``record`` that come from its peers (workloads,
        namespaces, identities, service, direction), each part empty or starting with a
        space; remembered per peer pair, as :meth:`cell_of` does."""
        src, dst, svc = record.source, record.destination, record.service
        key = (
            record.direction,
            id(src),
            id(dst),
            id(svc),
            record.source_identity,
            record.destination_identity,
        )
        found = self._log_parts.get(key)
        if found is not None and found[0] is src and found[1] is dst and found[2] is svc:
            return found[3]
        source_fields = (
            _quoted("src.workload", src.name if src else None),
            _quoted("src.namespace", src.namespace if src else None),
            _quoted("src.identity", record.source_identity),
        )
        destination_fields = (
            _quoted("dst.service", svc.hostname if svc else None),
            _quoted("dst.workload", dst.name if dst else None),
            _quoted("dst.namespace", dst.namespace if dst else None),
            _quoted("dst.identity", record.destination_identity),
            f'direction="{record.direction.value}"',
        )
        parts = (
            "".join(f" {f}" for f in source_fields if f),
            "".join(f" {f}" for f in destination_fields if f),
        )
        if len(self._log_parts) >= PAIRS_KEPT:
            self._log_parts.clear()
        self._log_parts[key] = (src, dst, svc, parts)
        return parts

    def value(self, family: int, labels: dict[str, str]) -> int:
        """One label set's count of ``family`` (``OPENED``, ...); 0 if never counted."""
        found = self._cells.get(tuple(labels.values()))
        return found[family] if found is not None else 0


class _TcpCollector:
    """The four ``istio_tcp_*`` counter families, from the cells, at each scrape."""

    def __init__(self, cells: dict[tuple[str, ...], Cell]) -> None:
        self.cells = cells

    def describe(self) -> list[Metric]:
        return [CounterMetricFamily(name, doc, labels=LABELS) for name, doc in FAMILIES]

    def collect(self) -> list[Metric]:
        families: list[Metric] = []
        for index, (name, doc) in enumerate(FAMILIES):
            family = CounterMetricFamily(name, doc, labels=LABELS)
            for labels, cell in list(self.cells.items()):
                family.add_metric(labels, float(cell[index]))
            families.append(family)
        return families


PAIRS_KEPT = 4096
_Pair = tuple[Workload | None, Workload | None, Service | None, Cell]


@dataclass(slots=True)
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
    _cell: Cell | None = None

    def open(self) -> None:
        """Count the connection as opened (once)."""
        if self._cell is None:
            self.metrics.live[id(self)] = self
            cell = self._cell = self.metrics.cell_of(self)
            cell[OPENED] += 1
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
        cell = self._cell
        assert cell is not None
        cell[CLOSED] += 1
        cell[SENT] += self.bytes_sent
        cell[RECEIVED] += self.bytes_received
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
        error = self.error
        level = logging.ERROR if error else logging.INFO
        if not access_log.isEnabledFor(level):
            return
        duration_ms = (time.monotonic() - self.started) * 1000
        source_part, destination_part = self.metrics.log_parts(self)
        hbone = f" dst.hbone_addr={self.hbone_addr}" if self.hbone_addr else ""
        line = (
            f"src.addr={self.src_addr}{source_part} dst.addr={self.dst_addr}{hbone}"
            f"{destination_part} bytes_sent={self.bytes_sent} bytes_recv={self.bytes_received}"
            f' duration="{duration_ms:.0f}ms"'
        )
        if error:
            line += f' error="{error}"'
        # ``Logger.handle`` with a record made here: what ``Logger.info`` does, but for
        # the walk up the stack for the caller's file and line (the log format shows
        # neither), ~5 µs per line.
        access_log.handle(
            access_log.makeRecord(
                access_log.name,
                level,
                "(unknown file)",
                0,
                "connection complete %s",
                (line,),
                None,
                "(unknown function)",
            )
        )


def _quoted(key: str, value: str | None) -> str:
    return f'{key}="{value}"' if value else ""
