"""Istio ``Telemetry`` (``telemetry.istio.io/v1``, ``v1alpha1``): types, schema and merging.

The schema is strict (unknown fields are errors, with their path). What the mesh
does with a Telemetry, and the decisions where it differs from Istio:

- **Scope and precedence** as istiod's: a Telemetry in the root namespace
  ``istio-system`` without selector/targetRefs is mesh-wide; one in another
  namespace without them covers that namespace; one with ``selector`` or
  ``targetRefs`` covers those workloads. For each setting the most specific
  Telemetry that says something wins (workload > namespace > mesh), as Istio
  merges them. Two namespace-wide Telemetries in one namespace, or two selecting
  the same workload, are ambiguous (``ambient analyze`` reports IST0160/IST0159;
  here the first by name wins).
- **Who honours it.** Only waypoints would apply Telemetry (access logging and
  request metrics), as in Istio's ambient mode, where ztunnel ignores the Telemetry
  API entirely: its metrics and access-log lines are fixed. Telemetries reach
  waypoints with the other L7 objects; ``effective_telemetry`` computes what a
  waypoint applies (``waypoint.config.LiveTelemetry``), and ``ambient analyze``
  reports on it. A Telemetry covers a waypoint when it is mesh-wide, in the waypoint's namespace without selector,
  selects the waypoint's pods (``gateway.networking.k8s.io/gateway-name``), or
  names the waypoint's Gateway in ``targetRefs``. ``targetRefs`` naming a
  ``Service`` is accepted but not applied per service (a warning says so).
- **Access logging**: ``disabled: true`` turns the waypoint's access-log lines
  off; ``disabled: false`` (or a provider entry) turns them on. Providers are
  Istio's built-in ``envoy`` (access log) and ``prometheus`` (metrics); any other
  name is an extension provider of the mesh config, which this mesh has none
  of: accepted with a warning and ignored. ``filter.expression`` supports a CEL
  subset: comparisons of ``response.code`` (``==``, ``!=``, ``<``, ``<=``, ``>``,
  ``>=`` with an integer) joined by ``&&`` or ``||``; any other expression loads
  with a warning and the filter is ignored (every request is logged).
- **Metrics**: ``overrides[].disabled`` drops a metric (``REQUEST_COUNT`` ->
  ``istio_requests_total`` ...; ``ALL_METRICS`` all of them); ``tagOverrides``
  with ``operation: REMOVE`` drops a label (reported as ``""``, which Prometheus
  treats as absent). ``UPSERT`` is accepted with a quoted string literal as
  value (``"'canary'"``) and applied as a constant; other value expressions load
  with a warning and are ignored. ``match.mode`` ``CLIENT`` never applies to a
  waypoint (it reports as the server side of the request).
- **Tracing** (``waypoint.tracing``) merges as istiod's ``Tracing()`` for the
  server side: each ``tracing`` entry of the covering Telemetries, least specific
  first, may set the provider (its first ``providers`` name, an extension
  provider of the mesh config, ``config.meshconfig``), ``randomSamplingPercentage``,
  ``disableSpanReporting``, ``useRequestIdForTraceSampling`` and
  ``enableIstioTags``; unset fields are inherited. ``customTags`` load with a
  warning and are not applied.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ambient.config.frozen import FrozenMap
from ambient.config.meta import resource_schema
from ambient.config.resources import Labels, ObjectMeta
from ambient.config.schema import (
    AnyValue,
    Bool,
    Choice,
    FieldPath,
    ListOf,
    MapOf,
    Node,
    Obj,
    Report,
    Str,
    req,
)

__all__ = [
    "BUILTIN_PROVIDERS",
    "METRIC_NAMES",
    "ROOT_NAMESPACE",
    "TELEMETRY",
    "AccessLogging",
    "CodeFilter",
    "EffectiveTelemetry",
    "MetricOverride",
    "Metrics",
    "Telemetry",
    "TelemetrySpec",
    "TracingSpec",
    "effective_telemetry",
    "parse_code_filter",
]

ROOT_NAMESPACE = "istio-system"
BUILTIN_PROVIDERS = frozenset({"envoy", "prometheus"})
MODES = ("CLIENT_AND_SERVER", "CLIENT", "SERVER")
METRIC_NAMES: Mapping[str, tuple[str, ...]] = {
    "REQUEST_COUNT": ("istio_requests_total",),
    "REQUEST_DURATION": ("istio_request_duration_milliseconds",),
    "REQUEST_SIZE": ("istio_request_bytes",),
    "RESPONSE_SIZE": ("istio_response_bytes",),
    "TCP_OPENED_CONNECTIONS": ("istio_tcp_connections_opened_total",),
    "TCP_CLOSED_CONNECTIONS": ("istio_tcp_connections_closed_total",),
    "TCP_SENT_BYTES": ("istio_tcp_sent_bytes_total",),
    "TCP_RECEIVED_BYTES": ("istio_tcp_received_bytes_total",),
    "GRPC_REQUEST_MESSAGES": ("istio_request_messages_total",),
    "GRPC_RESPONSE_MESSAGES": ("istio_response_messages_total",),
}
ALL_METRICS = "ALL_METRICS"


# --- types ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Provider:
    name: str


@dataclass(frozen=True)
class TargetRef:
    kind: str
    name: str
    group: str = ""
    namespace: str = ""


@dataclass(frozen=True)
class Selector:
    match_labels: Labels = field(default_factory=FrozenMap)


@dataclass(frozen=True)
class ModeMatch:
    mode: str = "CLIENT_AND_SERVER"


@dataclass(frozen=True)
class CodeFilter:
    """A parsed ``filter.expression``: ORed groups of ANDed ``response.code`` comparisons."""

    groups: tuple[tuple[tuple[str, int], ...], ...]

    def __call__(self, code: int) -> bool:
        return any(all(_COMPARE[op](code, n) for op, n in group) for group in self.groups)


@dataclass(frozen=True)
class Filter:
    expression: str
    compiled: CodeFilter | None = None


@dataclass(frozen=True)
class AccessLogging:
    match: ModeMatch = ModeMatch()
    providers: tuple[Provider, ...] = ()
    disabled: bool | None = None
    filter: Filter | None = None


@dataclass(frozen=True)
class MetricSelector:
    metric: str | None = None
    custom_metric: str | None = None
    mode: str = "CLIENT_AND_SERVER"


@dataclass(frozen=True)
class TagOverride:
    operation: str = "UPSERT"
    value: str | None = None


@dataclass(frozen=True)
class MetricOverride:
    match: MetricSelector = MetricSelector()
    disabled: bool | None = None
    tag_overrides: FrozenMap[str, TagOverride] = field(default_factory=FrozenMap)


@dataclass(frozen=True)
class Metrics:
    providers: tuple[Provider, ...] = ()
    overrides: tuple[MetricOverride, ...] = ()
    reporting_interval: str | None = None


@dataclass(frozen=True)
class Tracing:
    match: ModeMatch = ModeMatch()
    providers: tuple[Provider, ...] = ()
    random_sampling_percentage: float | None = None
    disable_span_reporting: bool | None = None
    custom_tags: object = None
    use_request_id_for_trace_sampling: bool | None = None
    enable_istio_tags: bool | None = None


@dataclass(frozen=True)
class TelemetrySpec:
    selector: Selector | None = None
    target_ref: TargetRef | None = None
    target_refs: tuple[TargetRef, ...] = ()
    tracing: tuple[Tracing, ...] = ()
    metrics: tuple[Metrics, ...] = ()
    access_logging: tuple[AccessLogging, ...] = ()

    @property
    def targets(self) -> tuple[TargetRef, ...]:
        """``targetRefs``, or the legacy single ``targetRef``."""
        return self.target_refs or ((self.target_ref,) if self.target_ref else ())


@dataclass(frozen=True)
class Telemetry:
    meta: ObjectMeta
    api_version: str
    spec: TelemetrySpec = TelemetrySpec()
    kind: str = field(default="Telemetry", init=False)


# --- the CEL subset ------------------------------------------------------------------------

_COMPARE = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}
_LITERAL = re.compile(r"'[^']*'|\"[^\"]*\"")
_TERM = re.compile(r"\s*\(?\s*response\.code\s*(==|!=|<=|>=|<|>)\s*(\d{1,3})\s*\)?\s*")


def parse_code_filter(expression: str) -> CodeFilter | None:
    """``response.code >= 400 && response.code != 404 || response.code == 200`` -> a
    filter; None for anything outside this subset."""
    groups = []
    for alternative in expression.split("||"):
        terms = []
        for term in alternative.split("&&"):
            found = _TERM.fullmatch(term)
            if found is None:
                return None
            terms.append((found.group(1), int(found.group(2))))
        groups.append(tuple(terms))
    return CodeFilter(tuple(groups))


# --- schema --------------------------------------------------------------------------------


def _percentage(value: object, at: FieldPath, report: Report) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 100:
        report.error(at, f"must be a number from 0 to 100, got {value!r}")


class _Percent(Node[float]):
    expected = "a number from 0 to 100"

    def parse(self, value: object, at: FieldPath, report: Report) -> float:
        _percentage(value, at, report)
        return float(value) if isinstance(value, int | float) else 0.0


def _check_filter(f: Filter, at: FieldPath, report: Report) -> None:
    if parse_code_filter(f.expression) is None:
        report.warn(
            (*at, "expression"),
            "only comparisons of response.code joined by && or || are supported; "
            "this filter is ignored (every request is logged)",
        )


def _build_filter(expression: str) -> Filter:
    return Filter(expression, parse_code_filter(expression))


def _check_providers(providers: Iterable[Provider], at: FieldPath, report: Report) -> None:
    for index, provider in enumerate(providers):
        if provider.name not in BUILTIN_PROVIDERS:
            report.warn(
                (*at, "providers", index, "name"),
                f"provider {provider.name!r} is not one of the built-in providers "
                f"({', '.join(sorted(BUILTIN_PROVIDERS))}) and this mesh has no extension "
                "providers: ignored",
            )


def _check_access_logging(entry: AccessLogging, at: FieldPath, report: Report) -> None:
    _check_providers(entry.providers, at, report)
    if entry.filter is not None:
        _check_filter(entry.filter, (*at, "filter"), report)


def _check_metrics(entry: Metrics, at: FieldPath, report: Report) -> None:
    _check_providers(entry.providers, at, report)


def _check_tag(tag: TagOverride, at: FieldPath, report: Report) -> None:
    report.warn(at, "tag overrides are validated but not applied yet: labels stay as they are")
    if tag.operation == "REMOVE" and tag.value is not None:
        report.error((*at, "value"), "a REMOVE override takes no value")
    if tag.operation == "UPSERT":
        if tag.value is None:
            report.error((*at, "value"), "an UPSERT override needs a value expression")
        elif _LITERAL.fullmatch(tag.value.strip()) is None:
            report.warn(
                (*at, "value"),
                "only a quoted string literal (e.g. \"'canary'\") is supported as a value; "
                "this override is ignored",
            )


def _check_selector(selector: MetricSelector, at: FieldPath, report: Report) -> None:
    if selector.metric is not None and selector.custom_metric is not None:
        report.error(at, "only one of metric or customMetric can be set")
    if selector.custom_metric is not None:
        report.warn((*at, "customMetric"), "custom metrics do not exist here: ignored")


def _check_spec(spec: TelemetrySpec, at: FieldPath, report: Report) -> None:
    if spec.target_ref is not None and spec.target_refs:
        report.error((*at, "targetRef"), "only one of targetRef or targetRefs can be set")
    if spec.selector is not None and spec.targets:
        report.error((*at, "selector"), "only one of selector or targetRefs can be set")
    for index, ref in enumerate(spec.targets):
        where = (*at, "targetRefs", index) if spec.target_refs else (*at, "targetRef")
        if (ref.group, ref.kind) not in (
            ("gateway.networking.k8s.io", "Gateway"),
            ("", "Service"),
            ("gateway.networking.k8s.io", "GatewayClass"),
            ("networking.istio.io", "ServiceEntry"),
        ):
            report.error(
                where,
                f"targetRefs kind {ref.kind!r} (group {ref.group!r}) is not supported: use a "
                "Gateway (group gateway.networking.k8s.io), a Service (group ''), "
                "a ServiceEntry or the GatewayClass istio-waypoint",
            )
        elif ref.kind in ("Service", "ServiceEntry"):
            report.warn(
                where,
                f"a {ref.kind} target is not applied per service here: this Telemetry is "
                "ignored (target the waypoint's Gateway instead)",
            )
    for index, tracing in enumerate(spec.tracing):
        if tracing.custom_tags is not None:
            report.warn(
                (*at, "tracing", index, "customTags"), "custom tags are not applied: ignored"
            )


_PROVIDERS = ListOf(Obj(Provider, {"name": req(Str())}))
_MODE = Obj(ModeMatch, {"mode": Choice(*MODES)})
_TARGET_REF = Obj(
    TargetRef, {"kind": req(Str()), "name": req(Str()), "group": Str(), "namespace": Str()}
)
_ACCESS_LOGGING = Obj(
    AccessLogging,
    {
        "match": _MODE,
        "providers": _PROVIDERS,
        "disabled": Bool(),
        "filter": Obj(_build_filter, {"expression": req(Str())}),
    },
    checks=[_check_access_logging],
)
_OVERRIDE = Obj(
    MetricOverride,
    {
        "match": Obj(
            MetricSelector,
            {
                "metric": Choice(ALL_METRICS, *METRIC_NAMES),
                "customMetric": Str(),
                "mode": Choice(*MODES),
            },
            checks=[_check_selector],
        ),
        "disabled": Bool(),
        "tagOverrides": MapOf(
            Obj(
                TagOverride,
                {"operation": Choice("UPSERT", "REMOVE"), "value": Str()},
                checks=[_check_tag],
            )
        ),
    },
)
_METRICS = Obj(
    Metrics,
    {
        "providers": _PROVIDERS,
        "overrides": ListOf(_OVERRIDE),
        "reportingInterval": Str(),
    },
    checks=[_check_metrics],
)
_TRACING = Obj(
    Tracing,
    {
        "match": _MODE,
        "providers": _PROVIDERS,
        "randomSamplingPercentage": _Percent(),
        "disableSpanReporting": Bool(),
        "customTags": AnyValue(),
        "useRequestIdForTraceSampling": Bool(),
        "enableIstioTags": Bool(),
    },
)
_SPEC = Obj(
    TelemetrySpec,
    {
        "selector": Obj(Selector, {"matchLabels": MapOf(Str())}),
        "targetRef": _TARGET_REF,
        "targetRefs": ListOf(_TARGET_REF),
        "tracing": ListOf(_TRACING),
        "metrics": ListOf(_METRICS),
        "accessLogging": ListOf(_ACCESS_LOGGING),
    },
    checks=[_check_spec],
)
TELEMETRY: Obj[Telemetry] = resource_schema(Telemetry, _SPEC)


# --- merging ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TracingSpec:
    """The merged ``tracing`` settings of a waypoint (None fields: not set by any)."""

    provider: str | None = None  # None: the mesh config's defaultProviders.tracing
    sampling: float | None = None  # percent; None: the mesh config's default
    disabled: bool = False
    use_request_id: bool = True
    istio_tags: bool = True


@dataclass(frozen=True)
class EffectiveTelemetry:
    """What one waypoint does: access log on/off and its filter, dropped metrics and labels."""

    access_log: bool = True
    log_filter: CodeFilter | None = None
    disabled_metrics: frozenset[str] = frozenset()
    # Per metric name (``istio_requests_total``): labels removed, labels set to a constant.
    removed_tags: FrozenMap[str, frozenset[str]] = field(default_factory=FrozenMap)
    set_tags: FrozenMap[str, FrozenMap[str, str]] = field(default_factory=FrozenMap)
    sources: tuple[str, ...] = ()  # ``namespace/name`` of the Telemetries that applied
    tracing: TracingSpec | None = None  # None: no Telemetry says anything about tracing

    def logs(self, code: int) -> bool:
        """Whether a request answered ``code`` gets an access-log line."""
        return self.access_log and (self.log_filter is None or self.log_filter(code))


def _applies_server_side(mode: str) -> bool:
    return mode in ("CLIENT_AND_SERVER", "SERVER")


def _level(telemetry: Telemetry, namespace: str, name: str, labels: Mapping[str, str]) -> int:
    """0 mesh, 1 namespace, 2 workload: how specifically ``telemetry`` covers the
    waypoint ``namespace/name`` (pods labelled ``labels``); -1 when it does not."""
    spec, ns = telemetry.spec, telemetry.meta.namespace
    if spec.targets:
        for ref in spec.targets:
            if ref.kind == "Gateway" and ns == namespace and ref.name == name:
                return 2
            if ref.kind == "GatewayClass" and ns == ROOT_NAMESPACE and ref.name == "istio-waypoint":
                return 0
        return -1
    if spec.selector is not None:
        wanted = spec.selector.match_labels
        selected = ns == namespace and all(labels.get(k) == v for k, v in wanted.items())
        return 2 if selected else -1
    if ns == namespace:
        return 1
    return 0 if ns == ROOT_NAMESPACE else -1


def effective_telemetry(
    telemetries: Iterable[Telemetry], namespace: str, name: str, labels: Mapping[str, str]
) -> EffectiveTelemetry:
    """The Telemetry settings of waypoint ``namespace/name`` (see the module docstring)."""
    ranked = sorted(
        (
            (level, t.meta.namespace, t.meta.name, t)
            for t in telemetries
            if (level := _level(t, namespace, name, labels)) >= 0
        ),
        key=lambda item: (item[0], item[1], item[2]),
    )
    access_log, log_filter = True, None
    disabled: set[str] = set()
    removed: dict[str, set[str]] = {}
    tags: dict[str, dict[str, str]] = {}
    sources = []
    tracing: TracingSpec | None = None
    # Least specific first, so more specific settings overwrite.
    for _, ns, tname, telemetry in ranked:
        sources.append(f"{ns}/{tname}")
        for trace_entry in telemetry.spec.tracing:
            if _applies_server_side(trace_entry.match.mode):
                tracing = _merge_tracing(tracing or TracingSpec(), trace_entry)
        logging_entries = [
            e for e in telemetry.spec.access_logging if _applies_server_side(e.match.mode)
        ]
        if logging_entries:
            entry = logging_entries[-1]
            names = {p.name for p in entry.providers}
            if entry.disabled is True:
                access_log = False
            elif entry.disabled is False or not names or "envoy" in names:
                access_log = True
            log_filter = entry.filter.compiled if entry.filter is not None else None
        for metrics in telemetry.spec.metrics:
            if metrics.providers and "prometheus" not in {p.name for p in metrics.providers}:
                continue
            for override in metrics.overrides:
                if not _applies_server_side(override.match.mode):
                    continue
                metric = override.match.metric or ALL_METRICS
                if override.match.custom_metric is not None:
                    continue
                names = (
                    {n for ns_ in METRIC_NAMES.values() for n in ns_}
                    if metric == ALL_METRICS
                    else set(METRIC_NAMES[metric])
                )
                if override.disabled is True:
                    disabled |= names
                elif override.disabled is False:
                    disabled -= names
                for tag, change in override.tag_overrides.items():
                    for metric_name in names:
                        if change.operation == "REMOVE":
                            removed.setdefault(metric_name, set()).add(tag)
                            tags.get(metric_name, {}).pop(tag, None)
                        elif change.value is not None and _LITERAL.fullmatch(change.value.strip()):
                            tags.setdefault(metric_name, {})[tag] = change.value.strip()[1:-1]
                            removed.get(metric_name, set()).discard(tag)
    return EffectiveTelemetry(
        access_log,
        log_filter,
        frozenset(disabled),
        FrozenMap({m: frozenset(t) for m, t in sorted(removed.items()) if t}),
        FrozenMap({m: FrozenMap(t) for m, t in sorted(tags.items()) if t}),
        tuple(sources),
        tracing,
    )


def _merge_tracing(spec: TracingSpec, entry: Tracing) -> TracingSpec:
    """``entry`` over ``spec``: what it sets replaces, what it leaves unset is inherited."""
    return TracingSpec(
        provider=entry.providers[0].name if entry.providers else spec.provider,
        sampling=(
            spec.sampling
            if entry.random_sampling_percentage is None
            else entry.random_sampling_percentage
        ),
        disabled=(
            spec.disabled if entry.disable_span_reporting is None else entry.disable_span_reporting
        ),
        use_request_id=(
            spec.use_request_id
            if entry.use_request_id_for_trace_sampling is None
            else entry.use_request_id_for_trace_sampling
        ),
        istio_tags=spec.istio_tags if entry.enable_istio_tags is None else entry.enable_istio_tags,
    )
