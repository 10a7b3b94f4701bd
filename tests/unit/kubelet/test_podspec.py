"""Reading pods as the API server serves them (``ambient.kubelet.podspec``)."""

from __future__ import annotations

from typing import Any

from ambient.kubelet.podspec import DEFAULT_GRACE, parse_pod


def _pod(**spec: Any) -> dict[str, Any]:
    containers = spec.pop("containers", [{"name": "app", "image": "x", "command": ["sleep"]}])
    return {
        "metadata": {"name": "p", "namespace": "shop", "uid": "u-1", "labels": {"a": "b"}},
        "spec": {"nodeName": "node-1", "containers": containers, **spec},
        "status": {"podIP": "10.244.1.5"},
    }


def test_defaults() -> None:
    pod = parse_pod(_pod())
    assert pod.key == ("shop", "p")
    assert (pod.uid, pod.node, pod.service_account) == ("u-1", "node-1", "default")
    assert pod.grace_period == DEFAULT_GRACE and pod.stop_grace() == DEFAULT_GRACE
    assert pod.pod_ip == "10.244.1.5" and pod.labels == {"a": "b"}
    assert not pod.deleting and pod.containers[0].readiness is None


def test_env_field_refs_kept_other_sources_are_config_errors() -> None:
    env = [
        {"name": "A", "value": "1"},
        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "L", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        {"name": "R", "valueFrom": {"fieldRef": {"fieldPath": "spec.hostname"}}},
    ]
    container = parse_pod(_pod(containers=[{"name": "c", "env": env}])).containers[0]
    assert [(e.name, e.value, e.field_path) for e in container.spec.env] == [
        ("A", "1", None),
        ("IP", "", "status.podIP"),
        ("L", "", "metadata.labels['app']"),
    ]
    assert "env S: secretKeyRef is not supported" in container.config_error
    assert "env R: fieldRef 'spec.hostname' is not supported" in container.config_error


def test_probes_named_ports_and_defaults() -> None:
    container = {
        "name": "c",
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"port": "http", "path": "/ready"}, "periodSeconds": 2},
        "livenessProbe": {"tcpSocket": {"port": "nope"}},
        "startupProbe": {"exec": {"command": ["true"]}, "failureThreshold": 30},
    }
    c = parse_pod(_pod(containers=[container])).containers[0]
    assert c.readiness is not None and c.liveness is not None and c.startup is not None
    assert (c.readiness.kind, c.readiness.port, c.readiness.path) == ("http", 8080, "/ready")
    assert (c.readiness.period, c.readiness.timeout, c.readiness.failure_threshold) == (2, 1, 3)
    assert c.liveness.problem == "port 'nope' is not a port of the container"
    assert (c.startup.kind, c.startup.command, c.startup.failure_threshold) == (
        "exec",
        ("true",),
        30,
    )
    grpc = parse_pod(_pod(containers=[{"name": "c", "readinessProbe": {"grpc": {"port": 1}}}]))
    assert grpc.containers[0].readiness is not None
    assert grpc.containers[0].readiness.problem == "grpc probes are not run here"


def test_deletion_grace_wins() -> None:
    raw = _pod(terminationGracePeriodSeconds=7)
    raw["metadata"] |= {
        "deletionTimestamp": "2026-01-01T00:00:00Z",
        "deletionGracePeriodSeconds": 2,
    }
    pod = parse_pod(raw)
    assert pod.deleting and pod.grace_period == 7 and pod.stop_grace() == 2


def test_same_run_ignores_metadata() -> None:
    a = parse_pod(_pod())
    relabelled = _pod()
    relabelled["metadata"]["labels"] = {"x": "y"}
    assert a.same_run(parse_pod(relabelled))
    other = _pod(containers=[{"name": "app", "image": "x", "command": ["true"]}])
    assert not a.same_run(parse_pod(other))


def test_security_context_user_fields() -> None:
    containers = [
        {
            "name": "c",
            "command": ["sleep"],
            "securityContext": {"runAsUser": 1000, "privileged": True, "runAsNonRoot": "yes"},
        }
    ]
    pod = parse_pod(
        _pod(
            containers=containers,
            securityContext={"runAsUser": 7, "runAsGroup": 8, "supplementalGroups": [9, "x", True]},
        )
    )
    assert pod.security_context is not None and pod.containers[0].spec.security_context
    assert (pod.security_context.run_as_user, pod.security_context.run_as_group) == (7, 8)
    assert pod.security_context.supplemental_groups == (9,)  # not numbers: left out
    assert pod.security_context.privileged is None  # a container field only
    own = pod.containers[0].spec.security_context
    assert (own.run_as_user, own.privileged, own.run_as_non_root) == (1000, True, None)
    assert parse_pod(_pod()).security_context is None
