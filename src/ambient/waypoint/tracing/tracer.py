"""Spans at the waypoint: a server span per request, a client span per upstream attempt.

Sampling, as Envoy's HTTP connection manager with the OpenTelemetry tracer under
istiod's settings: a request that carries a sampling decision (the ``sampled``
flag of its ``traceparent``, B3's ``sampled``/debug) keeps it; otherwise the
waypoint rolls ``randomSamplingPercentage``, using the request's ``x-request-id``
as the dice when ``useRequestIdForTraceSampling`` is on (Istio's default, so
every proxy that sees the same request id decides alike; a non-UUID id, or the
setting off, rolls a random number).

What a request costs:

- no tracing configured (no provider, or span reporting disabled): nothing;
- not sampled and arriving with a context: nothing (its headers go on unchanged);
- not sampled and arriving without one: two random ids and a ``traceparent``
  with the sampled flag off, so the proxies after it keep the decision (as Envoy);
- sampled: the spans (a few ``__slots__`` objects) are handed to the exporter's
  bounded queue when the request ends; encoding and sending happen off the
  request path (``tracing.otlp``).

Names and attributes are Envoy's: the server span is named after the route as
istiod's decorator names it, ``<service host>:<port>/*``, kind SERVER; each
attempt is ``router <cluster> egress``, kind CLIENT, its ``traceparent`` naming
it as the parent of the application's span. Tags: ``node_id``, ``zone``,
``guid:x-request-id``, ``http.url``, ``http.method``, ``http.protocol``,
``downstream_cluster``, ``user_agent``, ``peer.address``, ``request_size``,
``response_size``, ``http.status_code``, ``response_flags``, ``upstream_cluster``,
``upstream_cluster.name``, ``upstream_address``, ``component: proxy``, ``error``
(``true`` for a 5xx or no answer), ``grpc.status_code``; with
``enableIstioTags`` (default) ``istio.canonical_service``, ``istio.canonical_revision``,
``istio.mesh_id``, ``istio.namespace``, ``istio.cluster_id``; and the waypoint's
peer tags ``istio.source_workload``/``_namespace``/``_canonical_service``/
``_principal`` and ``istio.destination_*`` alike. ``http.url`` is cut at
``maxTagLength`` (256).

Decision: a client span ends when its attempt is over (a failure, a retried
answer) or, for the answer that goes downstream, when the request ends.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ambient.waypoint.model import Headers, RequestHead
from ambient.waypoint.tracing.context import extract, inject

if TYPE_CHECKING:
    from ambient.state.workload import Workload
    from ambient.waypoint.proxy.accesslog import RequestRecord

__all__ = ["CLIENT", "SERVER", "ProxyInfo", "Span", "Trace", "Tracer"]

SERVER, CLIENT = 2, 3  # OTLP SpanKind


@dataclass(frozen=True, slots=True)
class ProxyInfo:
    """Who emits the spans: the waypoint's node id and Istio's identifying tags."""

    node_id: str
    service_name: str  # the OTLP resource's service.name: ``<waypoint>.<namespace>``
    namespace: str
    canonical_service: str
    canonical_revision: str = "latest"
    mesh_id: str = "cluster.local"
    cluster_id: str = "Kubernetes"


class Span:
    """One finished (or open) span, as the exporter encodes it."""

    __slots__ = ("attributes", "end", "error", "kind", "name", "parent_id", "sampled",
                 "span_id", "start", "trace_id", "tracestate")  # fmt: skip

    def __init__(
        self, trace_id: str, span_id: str, parent_id: str, name: str, kind: int, tracestate: str
    ) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.name = name
        self.kind = kind
        self.tracestate = tracestate
        self.start = time.time_ns()
        self.end = 0
        self.attributes: list[tuple[str, str]] = []
        self.error = False
        self.sampled = True

    def finish(self) -> None:
        if not self.end:
            self.end = time.time_ns()


SpanSink = Callable[[list[Span]], None]


def _new_id(rng: random.Random, bits: int) -> str:
    value = rng.getrandbits(bits) or 1
    return f"{value:0{bits // 4}x}"


def _workload_tags(prefix: str, workload: Workload | None, out: list[tuple[str, str]]) -> None:
    if workload is None:
        return
    labels = workload.labels
    canonical = (
        workload.canonical_name
        or labels.get("service.istio.io/canonical-name")
        or labels.get("app.kubernetes.io/name")
        or labels.get("app")
        or workload.workload_name
        or workload.name
    )
    out.append((f"istio.{prefix}_workload", workload.workload_name or workload.name))
    out.append((f"istio.{prefix}_namespace", workload.namespace))
    out.append((f"istio.{prefix}_canonical_service", canonical))
    out.append((f"istio.{prefix}_principal", str(workload.identity)))


class Trace:
    """One request's part of a trace: its server span and the context it passes on."""

    __slots__ = ("attempts", "b3", "parent_id", "sampled", "server", "span_id", "trace_id",
                 "tracer", "tracestate", "user_agent")  # fmt: skip

    def __init__(
        self,
        tracer: Tracer,
        trace_id: str,
        parent_id: str,
        sampled: bool,
        tracestate: str,
        b3: str,
        head: RequestHead,
    ) -> None:
        self.tracer = tracer
        self.trace_id = trace_id
        self.parent_id = parent_id
        self.sampled = sampled
        self.tracestate = tracestate
        self.b3 = b3
        self.span_id = _new_id(tracer.rng, 64)
        self.attempts: list[Span] = []
        self.server: Span | None = None
        self.user_agent = ""
        if sampled:
            self.server = Span(trace_id, self.span_id, parent_id, "", SERVER, tracestate)
            self.user_agent = head.header("user-agent") or "-"

    def upstream_headers(self, headers: Headers, span_id: str | None = None) -> Headers:
        """``headers`` carrying this trace, with ``span_id`` (an attempt's) or the server
        span as the parent of what comes next."""
        return inject(
            headers, self.trace_id, span_id or self.span_id, self.sampled, self.tracestate,
            self.b3, self.span_id if span_id else self.parent_id,
        )  # fmt: skip

    def attempt(self, cluster: str, address: str, protocol: str) -> Span | None:
        """A client span for one upstream attempt (None when not sampled)."""
        if not self.sampled:
            return None
        span = Span(
            self.trace_id, _new_id(self.tracer.rng, 64), self.span_id,
            f"router {cluster} egress", CLIENT, self.tracestate,
        )  # fmt: skip
        info = self.tracer.proxy
        span.attributes += [
            ("component", "proxy"),
            ("node_id", info.node_id),
            ("zone", ""),
            ("upstream_cluster", cluster),
            ("upstream_cluster.name", cluster),
            ("upstream_address", address),
            ("http.protocol", protocol),
        ]
        self.attempts.append(span)
        return span

    @staticmethod
    def attempt_result(span: Span, status: int, failure: str = "") -> None:
        """What an attempt got: ``status`` (0: no response) or the ``failure`` flag."""
        span.attributes.append(("http.status_code", str(status)))
        if failure:
            span.attributes.append(("upstream.failure", failure))
        span.error = status == 0 or status >= 500

    def finish(self, record: RequestRecord, cluster: str, port: int) -> None:
        """End the spans and hand them to the exporter (sampled requests only)."""
        server = self.server
        if server is None:
            return
        server.finish()
        info = self.tracer.proxy
        service = record.service.hostname if record.service else None
        host = service or record.target.hostname or str(record.target.address)
        server.name = f"{host}:{port}/*"
        status = record.status
        url = f"http://{record.authority}{record.path}"
        max_length = self.tracer.max_tag_length
        attrs = server.attributes
        attrs += [
            ("node_id", info.node_id),
            ("zone", ""),
            ("guid:x-request-id", record.request_id),
            ("http.url", url[:max_length]),
            ("http.method", record.method),
            ("downstream_cluster", "-"),
            ("user_agent", self.user_agent),
            ("http.protocol", record.protocol),
            ("peer.address", str(record.downstream.source_ip)),
            ("request_size", str(record.request_bytes)),
            ("response_size", str(record.response_bytes)),
            ("response_flags", record.flags),
            ("http.status_code", str(status)),
            ("upstream_cluster", cluster),
            ("upstream_cluster.name", cluster),
            ("upstream_address", record.upstream_addr or "-"),
            ("component", "proxy"),
        ]
        if record.grpc:
            attrs.append(("grpc.status_code", record.grpc_status or "-"))
        if self.tracer.istio_tags:
            attrs += [
                ("istio.canonical_service", info.canonical_service),
                ("istio.canonical_revision", info.canonical_revision),
                ("istio.mesh_id", info.mesh_id),
                ("istio.namespace", info.namespace),
                ("istio.cluster_id", info.cluster_id),
            ]
        peer = record.downstream.peer_identity
        if peer is not None and record.source is None:
            attrs.append(("istio.source_principal", str(peer)))
        _workload_tags("source", record.source, attrs)
        _workload_tags("destination", record.destination, attrs)
        server.error = status == 0 or status >= 500
        if server.error:
            attrs.append(("error", "true"))
        spans = [server]
        for span in self.attempts:
            span.finish()
            if span.error:
                span.attributes.append(("error", "true"))
            spans.append(span)
        self.tracer.sink(spans)


class Tracer:
    """Starts a ``Trace`` per request by the sampling settings in force."""

    def __init__(
        self,
        proxy: ProxyInfo,
        sink: SpanSink,
        sampling: float,
        use_request_id: bool = True,
        istio_tags: bool = True,
        max_tag_length: int = 256,
        rng: random.Random | None = None,
    ) -> None:
        self.proxy = proxy
        self.sink = sink
        self.sampling = sampling
        self.use_request_id = use_request_id
        self.istio_tags = istio_tags
        self.max_tag_length = max_tag_length
        self.rng = rng or random.Random()

    def _roll(self, request_id: str) -> bool:
        if self.sampling >= 100:
            return True
        if self.sampling <= 0:
            return False
        if self.use_request_id and len(request_id) == 36:
            try:
                dice = int(request_id[-12:], 16) % 10000
            except ValueError:
                dice = self.rng.randrange(10000)
        else:
            dice = self.rng.randrange(10000)
        return dice < self.sampling * 100

    def begin(self, head: RequestHead, request_id: str) -> Trace | None:
        """The request's trace; None when it carries a context that stays unsampled (its
        headers go on unchanged)."""
        incoming = extract(head.headers)
        if incoming is None:
            sampled = self._roll(request_id)
            return Trace(self, _new_id(self.rng, 128), "", sampled, "", "", head)
        sampled = incoming.sampled if incoming.sampled is not None else self._roll(request_id)
        if not incoming.trace_id:  # a bare B3 decision: a new trace with that decision
            return Trace(self, _new_id(self.rng, 128), "", sampled, "", incoming.b3, head)
        if not sampled:
            return None
        return Trace(
            self, incoming.trace_id, incoming.span_id, True, incoming.tracestate, incoming.b3, head
        )
