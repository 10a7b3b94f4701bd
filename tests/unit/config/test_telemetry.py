"""Telemetry: strict schema (errors with paths, warnings for what is ignored) and merging."""

from __future__ import annotations

import pytest

from ambient.config import ConfigError, load_text
from ambient.config.telemetry import Telemetry, effective_telemetry, parse_code_filter

HEAD = "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: t, namespace: %s}\n"


def telemetry(spec: str, namespace: str = "shop", name: str = "t") -> Telemetry:
    text = (HEAD % namespace).replace("name: t", f"name: {name}") + spec
    (obj,) = load_text(text)
    assert isinstance(obj, Telemetry)
    return obj


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        (
            "spec: {accessLoging: []}",
            "spec.accessLoging: unknown field (did you mean 'accessLogging'?)",
        ),
        (
            "spec: {accessLogging: [{disabled: yes-ish}]}",
            "spec.accessLogging[0].disabled: expected a boolean",
        ),
        (
            "spec: {metrics: [{overrides: [{match: {metric: REQUESTS}}]}]}",
            "spec.metrics[0].overrides[0].match.metric: must be one of",
        ),
        (
            "spec: {metrics: [{overrides: [{tagOverrides: {a: {operation: REMOVE, value: \"'x'\"}}}]}]}",
            "tagOverrides[a].value: a REMOVE override takes no value",
        ),
        (
            "spec: {tracing: [{randomSamplingPercentage: 101}]}",
            "spec.tracing[0].randomSamplingPercentage: must be a number from 0 to 100",
        ),
        (
            "spec: {selector: {matchLabels: {a: b}}, targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: w}]}",
            "spec.selector: only one of selector or targetRefs",
        ),
        ("spec: {targetRefs: [{kind: Pod, name: w}]}", "spec.targetRefs[0]: targetRefs kind 'Pod'"),
    ],
)
def test_bad_telemetry_is_refused_with_its_path(spec: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(HEAD % "shop" + spec, "t.yaml")
    assert problem in str(info.value)


def test_unsupported_expressions_load_with_warnings() -> None:
    text = HEAD % "shop" + (
        'spec:\n  accessLogging: [{filter: {expression: \'request.headers["x"] == "y"\'}}]\n'
        "  metrics: [{overrides: [{tagOverrides: {a: {value: request.host}}}]}]\n"
    )
    warnings = [str(w) for w in load_text(text, "t.yaml").warnings]
    assert any("accessLogging[0].filter.expression: only comparisons" in w for w in warnings)
    assert any("tagOverrides[a].value: only a quoted string literal" in w for w in warnings)


@pytest.mark.parametrize(
    ("expression", "codes_logged"),
    [
        ("response.code >= 400", [404, 500]),
        ("response.code >= 400 && response.code != 404", [500]),
        ("response.code == 200 || response.code >= 500", [200, 500]),
    ],
)
def test_code_filter(expression: str, codes_logged: list[int]) -> None:
    compiled = parse_code_filter(expression)
    assert compiled is not None
    assert [c for c in (200, 404, 500) if compiled(c)] == codes_logged


def test_code_filter_refuses_other_cel() -> None:
    assert parse_code_filter("response.duration > 10") is None
    assert parse_code_filter("response.code >= 400 && true") is None


WAYPOINT = {"gateway.networking.k8s.io/gateway-name": "waypoint"}


def test_the_most_specific_telemetry_wins() -> None:
    mesh = telemetry("spec: {accessLogging: [{disabled: true}]}", namespace="istio-system")
    ns = telemetry("spec: {accessLogging: [{providers: [{name: envoy}]}]}", name="ns")
    other = telemetry("spec: {accessLogging: [{disabled: true}]}", namespace="other")
    assert effective_telemetry([mesh], "shop", "waypoint", WAYPOINT).access_log is False
    both = effective_telemetry([mesh, ns, other], "shop", "waypoint", WAYPOINT)
    assert both.access_log is True
    assert both.sources == ("istio-system/t", "shop/ns")
    target = telemetry(
        "spec:\n  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]\n"
        "  accessLogging: [{disabled: true}]\n",
        name="wp",
    )
    assert effective_telemetry([mesh, ns, target], "shop", "waypoint", WAYPOINT).access_log is False
    assert effective_telemetry([target], "shop", "other-waypoint", {}).access_log is True


def test_filter_and_metric_overrides_merge() -> None:
    spec = (
        "spec:\n  accessLogging: [{filter: {expression: 'response.code >= 500'}}]\n"
        "  metrics:\n  - overrides:\n    - match: {metric: REQUEST_DURATION}\n      disabled: true\n"
        "    - match: {metric: REQUEST_COUNT, mode: SERVER}\n"
        "      tagOverrides: {request_protocol: {operation: REMOVE}, team: {value: \"'pay'\"}}\n"
        "    - match: {metric: REQUEST_SIZE, mode: CLIENT}\n      disabled: true\n"
    )
    effective = effective_telemetry([telemetry(spec)], "shop", "waypoint", WAYPOINT)
    assert effective.logs(503) and not effective.logs(404)
    assert effective.disabled_metrics == {"istio_request_duration_milliseconds"}
    assert effective.removed_tags["istio_requests_total"] == {"request_protocol"}
    assert effective.set_tags["istio_requests_total"] == {"team": "pay"}
