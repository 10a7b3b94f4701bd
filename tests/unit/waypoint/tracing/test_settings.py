"""Which tracer a waypoint runs: Telemetry merged as istiod merges it, plus the mesh config."""

from __future__ import annotations

import pytest

from ambient.config import ConfigError, load_text
from ambient.config.meshconfig import MeshConfig
from ambient.state.proxy import ProxyState
from ambient.waypoint.config import L7Config, LiveTelemetry
from ambient.waypoint.policy import WaypointRef
from ambient.waypoint.tracing.live import LiveTracing, mesh_config
from ambient.waypoint.tracing.tracer import ProxyInfo

MESH = """\
apiVersion: v1
kind: ConfigMap
metadata: {{name: istio, namespace: istio-system}}
data:
  mesh: |
{mesh}
"""
PROVIDERS = """\
    extensionProviders:
    - name: otel
      opentelemetry: {service: 127.0.0.1, port: 4317}
    - name: otel-http
      opentelemetry: {service: collector.example, port: 4318, http: {path: /otlp/v1/traces, timeout: 2s, headers: [{name: X-Key, value: k}]}}
"""
TELEMETRY = """\
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: {name}, namespace: {namespace}}}
spec:
{spec}
"""


def mesh_text(extra: str = "") -> str:
    return MESH.format(mesh=PROVIDERS + extra)


def telemetry(namespace: str, spec: str, name: str = "t") -> str:
    return TELEMETRY.format(name=name, namespace=namespace, spec=spec)


def live(text: str) -> LiveTracing:
    l7 = L7Config()
    l7.set_config(load_text(text, "t.yaml"))
    ref = WaypointRef("shop", "waypoint")
    info = ProxyInfo("node", "waypoint.shop", "shop", "waypoint")
    return LiveTracing(l7, LiveTelemetry(l7, ref, {}), ProxyState("node-1"), info)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # No Telemetry, no default provider: no tracing (istiod configures none).
        (mesh_text(), None),
        # A default provider and the default 1 %.
        (mesh_text("    defaultProviders: {tracing: [otel]}\n"), ("grpc", "127.0.0.1", 4317, 1.0)),
        (
            mesh_text(
                "    defaultProviders: {tracing: [otel]}\n    defaultConfig: {tracing: {sampling: 25}}\n"
            ),
            ("grpc", "127.0.0.1", 4317, 25.0),
        ),
        (
            mesh_text("    defaultProviders: {tracing: [otel]}\n    enableTracing: false\n"),
            None,
        ),
        # A mesh-wide Telemetry selects the provider, a namespace one the sampling.
        (
            mesh_text()
            + telemetry(
                "istio-system",
                "  tracing: [{providers: [{name: OTEL-HTTP}], randomSamplingPercentage: 5}]",
            )
            + telemetry("shop", "  tracing: [{randomSamplingPercentage: 50}]"),
            ("http", "collector.example", 4318, 50.0),
        ),
        # The waypoint's own Telemetry (targetRefs) wins over the namespace's.
        (
            mesh_text("    defaultProviders: {tracing: [otel]}\n")
            + telemetry("shop", "  tracing: [{randomSamplingPercentage: 50}]")
            + telemetry(
                "shop",
                "  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]\n"
                "  tracing: [{randomSamplingPercentage: 100}]",
                name="wp",
            ),
            ("grpc", "127.0.0.1", 4317, 100.0),
        ),
        # disableSpanReporting lower down turns it off; a CLIENT-only entry does not apply.
        (
            mesh_text("    defaultProviders: {tracing: [otel]}\n")
            + telemetry("shop", "  tracing: [{disableSpanReporting: true}]"),
            None,
        ),
        (
            mesh_text()
            + telemetry("shop", "  tracing: [{match: {mode: CLIENT}, providers: [{name: otel}]}]"),
            None,
        ),
        # A provider the mesh config does not define: no spans.
        (mesh_text() + telemetry("shop", "  tracing: [{providers: [{name: zipkin}]}]"), None),
    ],
)
def test_settings(text: str, expected: tuple[str, str, int, float] | None) -> None:
    tracing = live(text)
    tracer = tracing()
    if expected is None:
        assert tracer is None
        return
    assert tracer is not None and tracing.exporter is not None
    target = tracing.exporter.target
    assert (target.protocol, target.host, target.port, tracer.sampling) == expected
    if target.protocol == "http":
        assert target.path == "/otlp/v1/traces" and target.timeout == 2.0
        assert target.headers == (("x-key", "k"),)


def test_no_mesh_config_means_defaults() -> None:
    l7 = L7Config()
    l7.set_config(load_text(telemetry("shop", "  tracing: [{providers: [{name: otel}]}]"), "t"))
    assert mesh_config(l7) == MeshConfig()


@pytest.mark.parametrize(
    ("mesh", "expected"),
    [
        (
            "    extensionProviders: [{name: x}]\n",
            "extensionProviders[0]: needs exactly one provider type",
        ),
        (
            "    extensionProviders: [{name: x, opentelemetry: {service: s}}]\n",
            "extensionProviders[0].opentelemetry.port: missing required field",
        ),
        (
            "    extensionProviders: [{name: x, opentelemetry: {service: s, port: 70000}}]\n",
            "extensionProviders[0].opentelemetry.port: must be between 1 and 65535",
        ),
        (
            "    defaultConfig: {tracing: {sampling: 101}}\n",
            "defaultConfig.tracing.sampling: must be a number from 0 to 100",
        ),
        ("    enableTracing: maybe\n", "data.mesh.enableTracing: expected"),
        ("    - not a mapping\n", "data.mesh: expected a YAML mapping"),
    ],
)
def test_bad_mesh_config_is_refused_with_its_path(mesh: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(MESH.format(mesh=mesh), "mesh.yaml")
    assert "ConfigMap/istio: data.mesh" in str(caught.value)
    assert expected in str(caught.value), str(caught.value)


def test_other_config_maps_load_and_are_ignored() -> None:
    config = load_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: shop}\n"
        "data: {mesh: 'not: [a mesh'}\n",
        "cm.yaml",
    )
    (obj,) = config.objects.values()
    assert obj.mesh is None  # type: ignore[attr-defined]
