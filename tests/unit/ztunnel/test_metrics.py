"""ztunnel's TCP metrics: label sets are bounded by workloads, never by connections."""

from __future__ import annotations

import ipaddress

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
