"""The traffic graph: workloads as nodes, hops as edges, figures from Istio's metrics.

Built from the increases of the proxies' series over the dashboard's window
(``samples.Increase``), as Kiali builds its workload graph from Prometheus:

- a node is a workload, ``namespace/name`` from Istio's ``*_workload`` and
  ``*_workload_namespace`` labels (the Deployment's name for its pods); a waypoint is a
  node of its own (``kind: waypoint``), so a request through it is two hops:
  ``source → waypoint`` and ``waypoint → destination``; a caller the proxies could not
  name is the node ``unknown`` (Kiali's);
- HTTP figures come from the waypoints' ``istio_requests_total`` and
  ``istio_request_duration_milliseconds`` (``reporter="waypoint"``): per hop, requests
  per second, the error rate (responses 4xx and 5xx, and requests that got no response:
  Kiali's definition) and the 99th percentile of the duration (Prometheus's
  ``histogram_quantile`` over the summed buckets); ``share`` is the hop's part of its
  source node's requests (a 90/10 split shows as 0.9 and 0.1 out of the waypoint);
- TCP figures come from ztunnel's ``istio_tcp_*`` (and a waypoint's, for what it passes
  through at L4): connections opened per second and bytes per second both ways. A
  connection between two ztunnels is reported by both; a hop takes the source's report
  when there is one (Kiali's choice), else the destination's (a waypoint's connections
  onward are reported only by the destination's ztunnel);
- ``mtls`` is ``connection_security_policy``: ``mutual_tls`` when every series of the
  hop says so, ``none`` when none does, ``partial`` otherwise.

Only hops with traffic in the window are edges. Every workload of the inventory is a
node, with traffic or not (``idle``). Services are boxes around the workloads behind them
(Kiali's app boxes; ``services``, each with its ``members``); a workload behind several
is placed with the first by name.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ambient.dashboard.samples import Increase

__all__ = ["UNKNOWN_NODE", "build_graph", "histogram_quantile", "layout"]

UNKNOWN_NODE = "unknown"
WAYPOINT_LABEL = "gateway_networking_k8s_io_gateway_name"
IDLE_PER_ROW = 5


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """Prometheus's ``histogram_quantile``: ``buckets`` maps each upper bound (``le``,
    ``inf`` included) to its cumulative count; None without observations."""
    bounds = sorted(buckets)
    if not bounds or bounds[-1] != float("inf"):
        return None
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower  # in the open bucket: its lower bound, as Prometheus answers
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


@dataclass
class _Hop:
    source: str
    target: str
    services: set[str] = field(default_factory=set)
    requests: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] = field(default_factory=lambda: defaultdict(float))
    seconds: float = 0.0
    security: set[str] = field(default_factory=set)
    tcp: dict[str, list[float]] = field(default_factory=dict)  # reporter -> [conns, bytes, s]
    tcp_security: dict[str, set[str]] = field(default_factory=dict)


def _node_id(namespace: str, workload: str) -> str:
    if workload in ("", "unknown"):
        return UNKNOWN_NODE
    return f"{namespace}/{workload}"


def _is_error(labels: Mapping[str, str]) -> bool:
    code = labels.get("response_code", "")
    return not code.isdigit() or int(code) >= 400 or int(code) == 0


def _waypoint_node(target: Mapping[str, str], labels: Mapping[str, str]) -> str:
    """The waypoint a ``reporter="waypoint"`` series came from: its Gateway's name."""
    name = target.get(WAYPOINT_LABEL) or target.get("pod", "waypoint")
    return _node_id(target.get("namespace", ""), name)


def _hops(increases: Iterable[Increase]) -> tuple[dict[tuple[str, str], _Hop], set[str]]:
    hops: dict[tuple[str, str], _Hop] = {}
    waypoints: set[str] = set()

    def hop(source: str, target: str) -> _Hop:
        key = (source, target)
        if key not in hops:
            hops[key] = _Hop(source, target)
        return hops[key]

    for inc in increases:
        for (name, frozen), value in inc.values.items():
            labels = dict(frozen)
            src = _node_id(
                labels.get("source_workload_namespace", ""), labels.get("source_workload", "")
            )
            dst = _node_id(
                labels.get("destination_workload_namespace", ""),
                labels.get("destination_workload", ""),
            )
            reporter = labels.get("reporter", "")
            service = labels.get("destination_service", "unknown")
            security = labels.get("connection_security_policy", "unknown")
            pairs = [(src, dst)]
            if reporter == "waypoint":
                wp = _waypoint_node(inc.labels, labels)
                waypoints.add(wp)
                pairs = [(src, wp), (wp, dst)]
            for a, b in pairs:
                h = hop(a, b)
                if service != "unknown":
                    h.services.add(service)
                if name == "istio_requests_total":
                    h.requests += value
                    h.errors += value if _is_error(labels) else 0.0
                    h.seconds = max(h.seconds, inc.seconds)
                    h.security.add(security)
                elif name == "istio_request_duration_milliseconds_bucket":
                    h.buckets[float(labels.get("le", "inf"))] += value
                else:
                    figures = h.tcp.setdefault(reporter, [0.0, 0.0, 0.0])
                    if name == "istio_tcp_connections_opened_total":
                        figures[0] += value
                        h.tcp_security.setdefault(reporter, set()).add(security)
                    else:
                        figures[1] += value
                    figures[2] = max(figures[2], inc.seconds)
    return hops, waypoints


def _mtls(policies: set[str]) -> str:
    if not policies:
        return "unknown"
    if policies == {"mutual_tls"}:
        return "mutual_tls"
    return "none" if "mutual_tls" not in policies else "partial"


def _edge(h: _Hop, waypoints: set[str]) -> dict[str, Any]:
    edge: dict[str, Any] = {
        "id": f"{h.source}>{h.target}",
        "source": h.source,
        "target": h.target,
        "services": sorted(h.services),
        "waypoint": h.source in waypoints or h.target in waypoints,
        "http": None,
        "tcp": None,
    }
    security = set(h.security)
    if h.requests > 0 and h.seconds > 0:
        p99 = histogram_quantile(0.99, h.buckets)
        edge["http"] = {
            "rps": h.requests / h.seconds,
            "error_rate": h.errors / h.requests,
            "p99_ms": p99,
            "share": 0.0,
        }
    reporter = "source" if "source" in h.tcp else next(iter(sorted(h.tcp)), None)
    if reporter is not None:
        conns, sent, seconds = h.tcp[reporter]
        if seconds > 0:
            edge["tcp"] = {"cps": conns / seconds, "bytes_per_s": sent / seconds}
        security |= h.tcp_security.get(reporter, set())
    edge["mtls"] = _mtls(security)
    return edge


def build_graph(
    increases: Sequence[Increase],
    inventory: Mapping[str, Mapping[str, Any]],
    services: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Nodes (``inventory``'s workloads, plus any the metrics name), edges with figures
    and the service boxes (see the module docstring); positions from :func:`layout`."""
    hops, waypoints = _hops(increases)
    edges = [_edge(h, waypoints) for h in hops.values()]
    edges = [e for e in edges if e["http"] or e["tcp"]]
    out_rps: dict[str, float] = defaultdict(float)
    for e in edges:
        if e["http"]:
            out_rps[e["source"]] += e["http"]["rps"]
    for e in edges:
        if e["http"] and out_rps[e["source"]] > 0:
            e["http"]["share"] = e["http"]["rps"] / out_rps[e["source"]]
    nodes: dict[str, dict[str, Any]] = {}
    for node_id, info in inventory.items():
        nodes[node_id] = {"id": node_id, **info}
    busy = {e["source"] for e in edges} | {e["target"] for e in edges}
    for node_id in sorted(busy - nodes.keys()):
        namespace, _, name = node_id.rpartition("/")
        nodes[node_id] = {"id": node_id, "namespace": namespace, "name": name or node_id}
    for node_id, node in nodes.items():
        if node_id == UNKNOWN_NODE:
            node["kind"] = "unknown"
        elif node_id in waypoints:
            node["kind"] = "waypoint"
        node.setdefault("kind", "workload")
        node["idle"] = node_id not in busy
    group = {n: min(node.get("services") or [""]) for n, node in nodes.items()}
    positions = layout(sorted(nodes), [(e["source"], e["target"]) for e in edges], group)
    for node_id, (x, y) in positions.items():
        nodes[node_id]["x"], nodes[node_id]["y"] = x, y
    edges.sort(key=lambda e: (e["source"], e["target"]))
    boxes = []
    for hostname, info in sorted((services or {}).items()):
        members = sorted(n for n, node in nodes.items() if group[n] == hostname)
        if members:
            boxes.append({**info, "id": hostname, "members": members})
    return {"nodes": [nodes[n] for n in sorted(nodes)], "edges": edges, "services": boxes}


def layout(
    nodes: Sequence[str],
    edges: Sequence[tuple[str, str]],
    group: Mapping[str, str] | None = None,
) -> dict[str, tuple[int, int]]:
    """Columns by hop count from the callers (a node's column is one past its furthest
    caller's), rows in order within a column, nodes of one ``group`` (service) together;
    idle nodes (no edge) in rows of their own below, grouped too. A cycle is cut at the edge that closes it in a depth-first walk from the nodes
    nobody calls. Grid units: the page scales them."""
    calls: dict[str, list[str]] = defaultdict(list)
    for a, b in sorted(set(edges)):
        if a != b:
            calls[a].append(b)
    busy = sorted({n for e in edges for n in e})
    called = {b for a, b in edges if a != b}
    callers: dict[str, set[str]] = defaultdict(set)
    state: dict[str, int] = {}  # 1: on the walk's path, 2: done

    def walk(node: str) -> None:
        state[node] = 1
        for nxt in calls[node]:
            if state.get(nxt) == 1:
                continue  # closes a cycle: not a caller for the layout
            callers[nxt].add(node)
            if nxt not in state:
                walk(nxt)
        state[node] = 2

    for node in [n for n in busy if n not in called] + busy:
        if node not in state:
            walk(node)
    column: dict[str, int] = {}

    def depth(node: str) -> int:
        if node not in column:
            column[node] = max((depth(c) + 1 for c in callers[node]), default=0)
        return column[node]

    rows: dict[int, int] = defaultdict(int)
    positions: dict[str, tuple[int, int]] = {}
    groups = group or {}
    for node in sorted(busy, key=lambda n: (depth(n), groups.get(n, ""), n)):
        positions[node] = (column[node], rows[column[node]])
        rows[column[node]] += 1
    bottom = max(rows.values(), default=0) + (1 if busy else 0)
    idle = sorted((n for n in nodes if n not in positions), key=lambda n: (groups.get(n, ""), n))
    for i, node in enumerate(idle):
        positions[node] = (i % IDLE_PER_ROW, bottom + i // IDLE_PER_ROW)
    return positions
