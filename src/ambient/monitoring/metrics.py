"""The control plane's own metrics, with istiod's names where istiod has the same measure.

xDS (``XdsServer`` calls :meth:`ControlPlaneMetrics.xds_pushed` / :meth:`xds_rejected`):

- ``pilot_xds``: xDS streams open now (istiod: the proxies connected over xDS);
- ``pilot_xds_pushes{type}``: responses sent, by type;
- ``pilot_xds_push_time{type}``: seconds to encode and hand one response to gRPC (a
  histogram with istiod's buckets);
- ``pilot_total_xds_rejects{type}``: NACKs received;
- ``pilot_services``: services known.

``type`` is istiod's metric form of the type URL: ``wds`` for ``istio.workload.Workload``
and the type URL itself for the types istiod has no short form for
(``istio.workload.Address``, ``istio.security.Authorization``, ambient's
``WaypointResource``), as istiod's ``GetMetricType`` does.

Certificates (``CaService`` calls :meth:`csr_answered` for each ``CreateCertificate``):

- ``citadel_server_csr_count``: requests received;
- ``citadel_server_success_cert_issuance_count``: certificates issued;
- ``citadel_server_authentication_failure_count``: callers that did not authenticate;
- ``citadel_server_csr_sign_err_count``: requests that could not be signed (a bad CSR);
- ``ambient_ca_refusals{code}``: every refusal by gRPC status (``PERMISSION_DENIED``:
  a node asked for an identity that does not run on it); istiod has no counter for it;
- ``citadel_server_root_cert_expiry_timestamp``: when the mesh's root expires (Unix time).

Configuration: ``ambient_config_rejected{source}``: edits of the config folder
(``folder``) or ``ambient apply`` calls (``apply``) refused because the result does not
load; the running configuration is unchanged by them. (istiod's nearest is the validation
webhook's ``galley_validation_failed``; the folder has no webhook.)

Counters are exposed as istiod exposes them: type ``counter``, no ``_total`` suffix (its
OpenTelemetry exporter runs without counter suffixes), so Istio's dashboards and alerts
find them by the same names; no ``_created`` series (``exposition``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ambient.httpd import Response
from ambient.monitoring import exposition

__all__ = ["ControlPlaneMetrics", "metric_type"]

exposition.disable_created()

_SHORT_TYPES = {"type.googleapis.com/istio.workload.Workload": "wds"}
PUSH_TIME_BUCKETS = (0.01, 0.1, 1, 3, 5, 10, 20, 30)  # istiod's pilot_xds_push_time


def metric_type(type_url: str) -> str:
    """istiod's ``GetMetricType`` for the types we serve."""
    return _SHORT_TYPES.get(type_url, type_url)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Sums:
    """Counters named as istiod names them: type ``counter``, no ``_total`` suffix.

    (prometheus-client always exposes a counter's samples as ``X_total``, so these are
    written out here, in the same text format.)"""

    def __init__(self) -> None:
        # name -> (help, label names, {label values: count})
        self.counters: dict[str, tuple[str, tuple[str, ...], dict[tuple[str, ...], float]]] = {}

    def counter(self, name: str, help_text: str, labels: tuple[str, ...] = ()) -> None:
        self.counters[name] = (help_text, labels, {} if labels else {(): 0.0})

    def inc(self, name: str, *values: str) -> None:
        series = self.counters[name][2]
        series[values] = series.get(values, 0.0) + 1

    def value(self, name: str, *values: str) -> float:
        """The current count (for tests)."""
        return self.counters[name][2].get(values, 0.0)

    def text(self) -> bytes:
        lines = []
        for name, (help_text, labels, series) in self.counters.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
            for values, count in sorted(series.items()):
                pairs = ",".join(f'{k}="{_escape(v)}"' for k, v in zip(labels, values, strict=True))
                lines.append(f"{name}{{{pairs}}} {count!r}" if pairs else f"{name} {count!r}")
        return ("\n".join(lines) + "\n").encode()


class _Gauges(Collector):
    """Gauges read when scraped."""

    def __init__(self) -> None:
        self.read: dict[str, tuple[str, Callable[[], float]]] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, (help_text, read) in self.read.items():
            yield GaugeMetricFamily(name, help_text, value=float(read()))


class ControlPlaneMetrics:
    """The control plane's instruments, in their own registry (served on :15014)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.sums = sums = _Sums()
        self.gauges = _Gauges()
        self.registry.register(self.gauges)
        sums.counter("pilot_xds_pushes", "xDS responses sent, by type", ("type",))
        sums.counter("pilot_total_xds_rejects", "xDS responses NACKed by proxies", ("type",))
        sums.counter("citadel_server_csr_count", "Certificate requests received")
        sums.counter("citadel_server_success_cert_issuance_count", "Certificates issued")
        sums.counter(
            "citadel_server_authentication_failure_count",
            "Certificate requests whose caller did not authenticate",
        )
        sums.counter(
            "citadel_server_csr_sign_err_count", "Certificate requests that could not be signed"
        )
        sums.counter(
            "ambient_ca_refusals", "Certificate requests refused, by gRPC status", ("code",)
        )
        sums.counter(
            "ambient_config_rejected",
            "Configuration changes refused (the running configuration is unchanged)",
            ("source",),
        )
        self.push_time = Histogram(
            "pilot_xds_push_time",
            "Seconds to encode and send one xDS response",
            ["type"],
            buckets=PUSH_TIME_BUCKETS,
            registry=self.registry,
        )

    # -- what the servers call ------------------------------------------------------------

    def xds_pushed(self, type_url: str, seconds: float) -> None:
        kind = metric_type(type_url)
        self.sums.inc("pilot_xds_pushes", kind)
        self.push_time.labels(kind).observe(seconds)

    def xds_rejected(self, type_url: str) -> None:
        self.sums.inc("pilot_total_xds_rejects", metric_type(type_url))

    def csr_answered(self, refusal: str | None) -> None:
        """One ``CreateCertificate``: ``refusal`` is the gRPC status name, None if issued."""
        self.sums.inc("citadel_server_csr_count")
        if refusal is None:
            self.sums.inc("citadel_server_success_cert_issuance_count")
            return
        self.sums.inc("ambient_ca_refusals", refusal)
        if refusal == "UNAUTHENTICATED":
            self.sums.inc("citadel_server_authentication_failure_count")
        elif refusal == "INVALID_ARGUMENT":
            self.sums.inc("citadel_server_csr_sign_err_count")

    def rejected_config(self, source: str) -> None:
        self.sums.inc("ambient_config_rejected", source)

    # -- what is read at scrape time --------------------------------------------------------

    def follow(
        self,
        *,
        streams: Callable[[], int] | None = None,
        services: Callable[[], int] | None = None,
        root_expiry: Callable[[], float] | None = None,
    ) -> None:
        """Gauges read at each scrape (each optional: a process without xDS has no streams)."""
        for name, help_text, read in (
            ("pilot_xds", "xDS streams open (connected proxies)", streams),
            ("pilot_services", "Services known to the control plane", services),
            (
                "citadel_server_root_cert_expiry_timestamp",
                "Unix time at which the mesh's root certificate expires",
                root_expiry,
            ),
        ):
            if read is not None:
                self.gauges.read[name] = (help_text, read)

    def render(self) -> Response:
        """Everything, as the HTTP response of ``/metrics``."""
        return exposition.render(self.registry, prefix=self.sums.text())
