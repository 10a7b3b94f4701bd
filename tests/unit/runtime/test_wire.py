"""PodRun survives the trip between the control plane process and ``ambient up``'s runtime."""

from __future__ import annotations

import json
from pathlib import Path

from ambient.config.resources import Container, ContainerPort, EnvVar, SecurityContext
from ambient.runtime import PodRun
from ambient.runtime.wire import pod_run_from_json, pod_run_to_json


def test_every_field_round_trips_through_json_text() -> None:
    run = PodRun(
        namespace="shop",
        name="web-abc",
        uid="Kubernetes//Pod/shop/web-abc",
        ip="127.10.0.7",
        containers=(
            Container(
                name="web",
                image="ignored:1",
                command=("python3", "app.py"),
                args=("--port", "8080"),
                env=(EnvVar("A", "1"), EnvVar("IP", field_path="status.podIP")),
                ports=(ContainerPort(8080, "http", "TCP"), ContainerPort(53, "dns", "UDP")),
                working_dir="/srv",
                security_context=SecurityContext(run_as_user=1000, run_as_non_root=True),
            ),
            Container(name="sidecar"),
        ),
        node="node-2",
        service_account="web",
        labels={"app": "web"},
        annotations={"a/b": "c"},
        proxy="socks5h://127.10.0.7:15080",
        connect_proxy="http://127.10.0.7:15081",
        extra_env={"HOST_IP": "127.1.0.2"},
        base_dir=Path("/tmp/x"),
        host_ip="127.1.0.2",
        security_context=SecurityContext(
            run_as_user=0, run_as_group=5, run_as_non_root=False, supplemental_groups=(7, 8)
        ),
    )
    again = pod_run_from_json(json.loads(json.dumps(pod_run_to_json(run))))
    assert again == run


def test_a_pod_without_proxy_keeps_none() -> None:
    run = PodRun(namespace="a", name="b", uid="u", ip="127.10.0.1", containers=())
    again = pod_run_from_json(pod_run_to_json(run))
    assert again.proxy is None and again.connect_proxy is None
