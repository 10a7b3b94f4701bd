"""Tracing to a real Jaeger: a request that crosses the waypoint twice, web -> a -> b.

The mesh (local mode, processes) has namespace ``trace`` bound to a waypoint; ``a``
(``traceapp/relay.py``) calls ``b`` (the shop app, which echoes the headers it got)
through its pod's CONNECT proxy and passes the trace headers on, as Istio asks of
applications. The mesh config (ConfigMap ``istio-system/istio``) names Jaeger's
OTLP/gRPC receiver on loopback as an ``opentelemetry`` provider, and a mesh-wide
Telemetry selects it with ``randomSamplingPercentage: 0``: only requests whose
``traceparent`` says sampled are traced (a parent's decision is honoured), and an
untraced request's decision (``-00``) reaches the second waypoint, which keeps it.
Jaeger's HTTP API gives the trace: the waypoint's server and client spans, parent
to child, carrying the trace id the applications saw. Service ``c`` opts out of the
waypoint: through ztunnel alone the trace headers arrive as sent, nothing added.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.harness import REPO, Mesh, wait_for
from tests.e2e.jaegerrun import Jaeger, running_jaeger
from tests.e2e.manifests import SLEEP, manifest, namespace, pod, python, service, waypoint

pytestmark = pytest.mark.slow

RELAY = REPO / "tests" / "e2e" / "traceapp" / "relay.py"
APP = REPO / "examples" / "shop" / "app.py"
SERVICE_NAME = "waypoint.trace"  # the waypoint's service.name: <waypoint>.<namespace>

# the mesh config: Jaeger as an OpenTelemetry provider, selected mesh-wide at 0 %
TRACING = """\
apiVersion: v1
kind: ConfigMap
metadata: {{name: istio, namespace: istio-system}}
data:
  mesh: |
    extensionProviders:
    - name: jaeger
      opentelemetry: {{service: 127.0.0.1, port: {otlp}}}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: mesh-default, namespace: istio-system}}
spec:
  tracing:
  - providers: [{{name: jaeger}}]
    randomSamplingPercentage: 0
"""
HTTP = [{"name": "http", "port": 8080}]


def mesh_yaml(otlp: int) -> str:
    """The mesh config naming Jaeger's OTLP/gRPC port, and the ``trace`` namespace's apps."""
    return manifest(
        namespace("istio-system", ambient=False),
        TRACING.format(otlp=otlp),
        namespace("trace", waypoint="waypoint"),
        waypoint("trace"),
        service("trace", "a", HTTP),
        service("trace", "b", HTTP),
        pod("trace", "a", python(RELAY, "8080"), ports=[8080], privileged=True,
            env=[{"name": "NEXT", "value": "b.trace:8080"}]),
        pod("trace", "b", python(APP, "--name", "b", "--port", "8080"), ports=[8080],
            privileged=True),
        service("trace", "c", HTTP, labels={"istio.io/use-waypoint": "none"}),
        pod("trace", "c", python(APP, "--name", "c", "--port", "8080"), ports=[8080],
            privileged=True),
        pod("trace", "web", python("-c", SLEEP), labels={}, privileged=True),
    )  # fmt: skip


@pytest.fixture(scope="module")
def jaeger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jaeger]:
    with running_jaeger(tmp_path_factory.mktemp("jaeger")) as running:
        yield running


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, jaeger: Jaeger) -> Iterator[Mesh]:
    base = tmp_path_factory.mktemp("tracing")
    config = base / "config"
    config.mkdir()
    (config / "mesh.yaml").write_text(mesh_yaml(jaeger.ports.otlp_grpc))
    running = Mesh(config, base / "state", base / "up.log").start(wait=60)
    try:
        yield running
    finally:
        running.stop()


def chain(mesh: Mesh, *headers: str) -> dict[str, Any]:
    args = [arg for h in headers for arg in ("-H", h)]

    def call() -> dict[str, Any] | None:
        result = mesh.exec(
            "web", "curl", "-s", "--max-time", "10", *args, "http://a.trace:8080/chain",
            namespace="trace",
        )  # fmt: skip
        try:
            answer: dict[str, Any] = json.loads(result.stdout)
        except ValueError:
            return None
        return answer if isinstance(answer.get("next"), dict) and "app" in answer["next"] else None

    return wait_for("web -> a -> b through the waypoint", call, timeout=30, every=0.5)


def parent_of(span: dict[str, Any]) -> str | None:
    refs = [r["spanID"] for r in span["references"] if r["refType"] == "CHILD_OF"]
    return refs[0] if refs else None


def tags(span: dict[str, Any]) -> dict[str, Any]:
    return {t["key"]: t["value"] for t in span["tags"]}


def test_a_request_through_the_waypoint_twice_is_one_trace_in_jaeger(
    mesh: Mesh, jaeger: Jaeger
) -> None:
    # First an untraced request (no traceparent, sampling 0 %): its decision travels on.
    untraced = chain(mesh)
    decided = untraced["received"]["traceparent"]
    assert decided.endswith("-00"), decided  # the first waypoint said "not sampled"
    assert untraced["next"]["headers"]["traceparent"].split("-")[1] == decided.split("-")[1]

    trace_id, caller = secrets.token_hex(16), secrets.token_hex(8)
    answer = chain(mesh, f"traceparent: 00-{trace_id}-{caller}-01", "tracestate: vendor=x")
    at_a = answer["received"]["traceparent"].split("-")
    at_b = answer["next"]["headers"]["traceparent"].split("-")
    assert at_a[1] == at_b[1] == trace_id and at_a[3] == at_b[3] == "01"
    assert answer["received"]["tracestate"] == answer["next"]["headers"]["tracestate"] == "vendor=x"

    def four_spans() -> dict[str, Any] | None:
        trace = jaeger.trace(trace_id)
        return trace if trace is not None and len(trace["spans"]) >= 4 else None

    trace = wait_for("the trace in Jaeger", four_spans, timeout=30, every=0.5)
    spans = trace["spans"]
    assert len(spans) == 4, [s["operationName"] for s in spans]
    processes = {key: p["serviceName"] for key, p in trace["processes"].items()}
    assert {processes[s["processID"]] for s in spans} == {SERVICE_NAME}
    by_id = {s["spanID"]: s for s in spans}
    servers = sorted(
        (s for s in spans if tags(s).get("span.kind") == "server"), key=lambda s: s["startTime"]
    )
    clients = [s for s in spans if tags(s).get("span.kind") == "client"]
    assert len(servers) == 2 and len(clients) == 2
    first, second = servers
    # web's span -> server (waypoint, to a) -> client (attempt to a) -> [a] ->
    # server (waypoint, to b) -> client (attempt to b)
    assert parent_of(first) == caller
    to_a = next(c for c in clients if parent_of(c) == first["spanID"])
    assert at_a[2] == to_a["spanID"]  # a saw the attempt's span as its parent
    assert parent_of(second) == to_a["spanID"]
    to_b = next(c for c in clients if parent_of(c) == second["spanID"])
    assert at_b[2] == to_b["spanID"]
    assert set(by_id) == {first["spanID"], second["spanID"], to_a["spanID"], to_b["spanID"]}
    # Names and tags as Envoy's.
    assert first["operationName"] == "a.trace.svc.cluster.local:8080/*"
    assert second["operationName"] == "b.trace.svc.cluster.local:8080/*"
    assert to_a["operationName"] == "router outbound|8080||a.trace.svc.cluster.local egress"
    first_tags = tags(first)
    assert first_tags["http.method"] == "GET" and first_tags["http.status_code"] == "200"
    assert first_tags["http.url"] == "http://a.trace:8080/chain"
    assert first_tags["component"] == "proxy" and first_tags["response_flags"] == "-"
    assert first_tags["upstream_cluster"] == "outbound|8080||a.trace.svc.cluster.local"
    assert first_tags["istio.canonical_service"] == "waypoint"
    assert first_tags["istio.source_workload"] == "web"
    assert first_tags["istio.destination_workload"] == "a"
    assert first_tags["node_id"].startswith("waypoint~")
    assert first_tags["guid:x-request-id"] == answer["received"]["x-request-id"]
    assert tags(second)["istio.source_workload"] == "a"
    assert tags(to_b)["http.status_code"] == "200"

    # The untraced request left no spans (it was sent before, so it would be there by now).
    untraced_id = decided.split("-")[1]
    assert jaeger.trace(untraced_id) is None
    # The node proxy shows the waypoint's tracer and its exporter's counts.
    (hosted,) = mesh.json("zc", "waypoints", "-n", "trace")
    tracing = hosted["tracing"]
    assert tracing["collector"] == f"grpc://127.0.0.1:{jaeger.ports.otlp_grpc}"
    assert tracing["sampling"] == 0.0 and tracing["exported"] >= 4
    assert tracing["dropped"] == tracing["failed"] == 0


def test_ztunnel_passes_trace_headers_unchanged_and_adds_none(mesh: Mesh) -> None:
    sent = {
        "traceparent": f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01",
        "tracestate": "vendor=x,other=y",
        "b3": f"{secrets.token_hex(16)}-{secrets.token_hex(8)}-1",
        "x-b3-traceid": secrets.token_hex(8),
    }
    args = [arg for k, v in sent.items() for arg in ("-H", f"{k}: {v}")]

    def call() -> dict[str, Any] | None:
        result = mesh.exec(
            "web", "curl", "-s", "--max-time", "10", *args, "http://c.trace:8080/",
            namespace="trace",
        )  # fmt: skip
        try:
            answer: dict[str, Any] = json.loads(result.stdout)
        except ValueError:
            return None
        return answer if answer.get("app") == "c" else None

    headers = wait_for("web -> c through ztunnel only", call, timeout=30, every=0.5)["headers"]
    trace_headers = {
        k: v for k, v in headers.items() if k in sent or k.startswith("x-b3") or k == "x-request-id"
    }
    assert trace_headers == sent
    plain = mesh.exec("web", "curl", "-s", "http://c.trace:8080/", namespace="trace").stdout
    assert not {"traceparent", "b3", "x-request-id"} & set(json.loads(plain)["headers"])
