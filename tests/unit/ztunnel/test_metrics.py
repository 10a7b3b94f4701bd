"""ztunnel's TCP metrics: label sets are bounded by workloads, never by connections."""

from __future__ import annotations

import ipaddress
import logging
import re

import pytest

from ambient.state.workload import TunnelProtocol, Workload
from ambient.ztunnel.metrics import ConnectionRecord, Direction, Metrics


def _label_sets(metrics: Metrics) -> int:
    return sum(
        1
        for family in metrics.registry.collect()
        if family.name == "istio_tcp_connections_opened"
        for sample in family.samples
        if sample.name.endswith("_total")
    )


def test_passthrough_to_many_addresses_adds_no_label_sets() -> None:
    """Outbound to addresses the mesh does not know (no service, no workload): one label set
    per address would grow the registry with every new address dialled."""
    metrics = Metrics()
    source = Workload(
        uid="Kubernetes//Pod/shop/web-0",
        name="web-0",
        namespace="shop",
        addresses=(ipaddress.ip_address("10.244.0.7"),),
        service_account="web",
        node="node-1",
        tunnel_protocol=TunnelProtocol.HBONE,
    )
    for i in range(500):
        record = ConnectionRecord(
            metrics,
            Direction.OUTBOUND,
            src_addr=f"10.244.0.7:{40000 + i}",
            dst_addr=f"203.0.{i // 250}.{i % 250}:443",
            source=source,
        )
        record.close()
    assert _label_sets(metrics) == 1
    (family,) = [f for f in metrics.registry.collect() if f.name == "istio_tcp_connections_closed"]
    (total,) = [s for s in family.samples if s.name.endswith("_total")]
    assert total.value == 500
    assert total.labels["destination_service"] == "unknown"


def _workload(revision: str) -> Workload:
    return Workload(
        uid="Kubernetes//Pod/shop/web-0",
        name="web-0",
        namespace="shop",
        addresses=(ipaddress.ip_address("10.244.0.7"),),
        service_account="web",
        node="node-1",
        tunnel_protocol=TunnelProtocol.HBONE,
        canonical_name="web",
        canonical_revision=revision,
    )


def _closed_by_revision(metrics: Metrics) -> dict[str, float]:
    (family,) = [f for f in metrics.registry.collect() if f.name == "istio_tcp_connections_closed"]
    return {
        s.labels["source_canonical_revision"]: s.value
        for s in family.samples
        if s.name.endswith("_total")
    }


def test_a_pushed_workload_gets_its_own_labels() -> None:
    """Label sets are remembered per peer pair: a workload pushed again with other labels
    (a new object, same uid) is counted under its new labels, not the remembered ones."""
    metrics = Metrics()
    for revision in ("v1", "v1", "v2", "v2", "v2", "v1"):
        ConnectionRecord(
            metrics, Direction.OUTBOUND, src_addr="10.244.0.7:4000", dst_addr="10.0.0.1:80",
            source=_workload(revision),
        ).close()  # fmt: skip
    assert _closed_by_revision(metrics) == {"v1": 3.0, "v2": 3.0}
    same = _workload("v3")
    for _ in range(3):
        record = ConnectionRecord(
            metrics, Direction.OUTBOUND, src_addr="10.244.0.7:4000", dst_addr="10.0.0.1:80",
            source=same,
        )  # fmt: skip
        record.open()
        record.bytes_sent = 5
        record.close()
    assert _closed_by_revision(metrics)["v3"] == 3.0


def test_the_exposition_is_prometheus_client_counters() -> None:
    """The cells are exposed exactly as four labelled ``prometheus_client`` counters with
    the same increments would be (names, help, label order, values, no ``_created``)."""
    from prometheus_client import CollectorRegistry, Counter, generate_latest

    from ambient.ztunnel.metrics import FAMILIES, LABELS, ResponseFlags

    metrics = Metrics()
    reference = CollectorRegistry()
    counters = [Counter(name, doc, LABELS, registry=reference) for name, doc in FAMILIES]
    assert generate_latest(metrics.registry) == generate_latest(reference)
    for i in range(7):
        record = ConnectionRecord(
            metrics,
            Direction.INBOUND if i % 2 else Direction.OUTBOUND,
            src_addr="10.244.0.7:4000",
            dst_addr="10.0.0.1:80",
            source=_workload(f"v{i % 3}"),
            source_identity="spiffe://cluster.local/ns/shop/sa/web" if i % 2 else None,
            mtls=bool(i % 2),
            flags=ResponseFlags.DENY if i == 4 else ResponseFlags.NONE,
        )
        record.bytes_sent, record.bytes_received = 1000 * i, i
        record.close()
        opened, closed, sent, received = (c.labels(**record.labels()) for c in counters)
        opened.inc()
        closed.inc()
        sent.inc(record.bytes_sent)
        received.inc(record.bytes_received)
    assert generate_latest(metrics.registry) == generate_latest(reference)
    assert len(metrics.live) == 0


def _reference_line(record: ConnectionRecord) -> str:
    """The access-log line as the record wrote it field by field before (duration aside)."""

    def quoted(key: str, value: str | None) -> str:
        return f'{key}="{value}"' if value else ""

    src, dst, svc = record.source, record.destination, record.service
    fields = [
        f"src.addr={record.src_addr}",
        quoted("src.workload", src.name if src else None),
        quoted("src.namespace", src.namespace if src else None),
        quoted("src.identity", record.source_identity),
        f"dst.addr={record.dst_addr}",
        f"dst.hbone_addr={record.hbone_addr}" if record.hbone_addr else "",
        quoted("dst.service", svc.hostname if svc else None),
        quoted("dst.workload", dst.name if dst else None),
        quoted("dst.namespace", dst.namespace if dst else None),
        quoted("dst.identity", record.destination_identity),
        f'direction="{record.direction.value}"',
        f"bytes_sent={record.bytes_sent}",
        f"bytes_recv={record.bytes_received}",
        'duration="0ms"',
        quoted("error", record.error),
    ]
    return "connection complete " + " ".join(f for f in fields if f)


def test_the_access_log_line_is_unchanged(caplog: pytest.LogCaptureFixture) -> None:
    """Peer fields kept per pair, the rest per connection: the same line, field for field,
    at INFO, or at ERROR with ``error=``."""
    from ambient.state.workload import Service

    metrics = Metrics()
    service = Service(
        name="orders", namespace="shop", hostname="orders.shop.svc.cluster.local",
        addresses=(), ports=(),
    )  # fmt: skip
    variants = [
        {},
        {"source": _workload("v1"), "source_identity": "spiffe://cluster.local/ns/shop/sa/web"},
        {"destination": _workload("v2"), "service": service, "hbone_addr": "10.0.0.1:8080"},
        {"source": _workload("v1"), "destination": _workload("v1"), "mtls": True,
         "destination_identity": "spiffe://cluster.local/ns/shop/sa/web"},
    ]  # fmt: skip
    for direction in Direction:
        for variant in variants:
            for error in (None, "connection closed due to policy rejection"):
                for _ in range(2):  # the second line from the remembered parts
                    record = ConnectionRecord(
                        metrics, direction, src_addr="10.244.0.7:4000",
                        dst_addr="10.0.0.1:15008", **variant,  # type: ignore[arg-type]
                    )  # fmt: skip
                    record.bytes_sent, record.bytes_received = 12, 34
                    record.error = error
                    caplog.clear()
                    with caplog.at_level(logging.INFO, logger="ambient.access"):
                        record.close()
                    (logged,) = caplog.records
                    assert logged.levelno == (logging.ERROR if error else logging.INFO)
                    message = re.sub(r'duration="\d+ms"', 'duration="0ms"', logged.getMessage())
                    assert message == _reference_line(record)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ambient.access"):
        ConnectionRecord(metrics, Direction.INBOUND, src_addr="a", dst_addr="b").close()
        ConnectionRecord(
            metrics, Direction.INBOUND, src_addr="a", dst_addr="b", error="refused"
        ).close()
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
