"""kubectl's table shapes, durations and selectors on API-form objects (no mesh)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ambient.cli.printers import columns_for, generate_columns, human_duration, table
from ambient.cli.selectors import SelectorError, parse_selector
from ambient.install.crds import crds_dir, load_crds

NOW = 1_700_000_000.0
CREATED = "2023-11-14T22:08:17Z"  # NOW - 5m3s


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (119, "119s"),
        (120, "2m"),
        (303, "5m3s"),
        (599, "9m59s"),
        (600, "10m"),
        (3 * 3600 - 1, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 240, "3h4m"),
        (8 * 3600, "8h"),
        (47 * 3600 + 3599, "47h"),
        (2 * 86400 + 3 * 3600, "2d3h"),
        (8 * 86400, "8d"),
        (2 * 365 * 86400 + 20 * 86400, "2y20d"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_human_duration_is_kubectls(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


def pod(**status: object) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web-1",
            "namespace": "shop",
            "creationTimestamp": "2023-11-14T22:08:17Z",
        },
        "spec": {"nodeName": "node-1", "containers": [{"name": "app"}, {"name": "side"}]},
        "status": {"phase": "Running", "podIP": "127.10.0.3", **status},
    }


def test_pod_columns_and_wide() -> None:
    running = {"name": "app", "ready": True, "restartCount": 2, "state": {"running": {}}}
    backoff = {
        "name": "side",
        "ready": False,
        "restartCount": 1,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
    }
    obj = pod(containerStatuses=[running, backoff])
    headers, rows = table(
        [obj], kind="Pod", api_version="v1", wide=False, all_namespaces=False, now=NOW
    )
    assert headers == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert rows == [["web-1", "1/2", "CrashLoopBackOff", "3", "5m3s"]]
    headers, rows = table(
        [obj], kind="Pod", api_version="v1", wide=True, all_namespaces=True, now=NOW
    )
    assert headers == [
        "NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE",
        "NOMINATED NODE", "READINESS GATES",
    ]  # fmt: skip
    assert rows[0][0] == "shop" and rows[0][6:] == ["127.10.0.3", "node-1", "<none>", "<none>"]


def test_service_deployment_and_crd_columns() -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "orders", "creationTimestamp": CREATED},
        "spec": {
            "clusterIP": "127.20.0.2",
            "ports": [{"port": 8080}, {"port": 53, "protocol": "UDP"}],
        },
    }
    assert table(
        [service], kind="Service", api_version="v1", wide=False, all_namespaces=False, now=NOW
    ) == (
        ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"],
        [["orders", "ClusterIP", "127.20.0.2", "<none>", "8080/TCP,53/UDP", "5m3s"]],
    )
    deployment = {
        "kind": "Deployment",
        "metadata": {"name": "web", "creationTimestamp": CREATED},
        "spec": {"replicas": 2},
        "status": {"replicas": 2, "updatedReplicas": 2, "readyReplicas": 1, "availableReplicas": 1},
    }
    assert table(
        [deployment],
        kind="Deployment",
        api_version="apps/v1",
        wide=False,
        all_namespaces=False,
        now=NOW,
    )[1] == [["web", "1/2", "2", "1", "5m3s"]]
    vs = {
        "kind": "VirtualService",
        "metadata": {"name": "orders", "creationTimestamp": CREATED},
        "spec": {"hosts": ["orders", "orders.shop"]},
    }
    assert table(
        [vs],
        kind="VirtualService",
        api_version="networking.istio.io/v1",
        wide=False,
        all_namespaces=False,
        now=NOW,
    ) == (
        ["NAME", "GATEWAYS", "HOSTS", "AGE"],
        [["orders", "", '["orders","orders.shop"]', "5m3s"]],
    )
    gateway = {
        "kind": "Gateway",
        "metadata": {"name": "waypoint", "creationTimestamp": CREATED},
        "spec": {"gatewayClassName": "istio-waypoint"},
        "status": {
            "addresses": [{"value": "127.20.0.9"}, {"value": "::1"}],
            "conditions": [
                {"type": "Accepted", "status": "True"},
                {"type": "Programmed", "status": "False"},
            ],
        },
    }
    assert table(
        [gateway],
        kind="Gateway",
        api_version="gateway.networking.k8s.io/v1",
        wide=False,
        all_namespaces=False,
        now=NOW,
    ) == (
        ["NAME", "CLASS", "ADDRESS", "PROGRAMMED", "AGE"],
        [["waypoint", "istio-waypoint", "127.20.0.9", "False", "5m3s"]],
    )
    assert [c[0] for c in columns_for("RequestAuthentication", "security.istio.io")] == ["AGE"]
    assert [c[0] for c in columns_for("PeerAuthentication", "security.istio.io")] == ["MODE", "AGE"]


def test_printer_columns_match_the_pinned_crds() -> None:
    """printer_columns.json is generated from the CRDs `make crds` fetches (never retyped)."""
    folder = crds_dir()
    if not folder.exists():
        pytest.skip(f"no CRDs in {folder} (make crds)")
    shipped = Path(__file__).resolve().parents[3] / "src/ambient/cli/printer_columns.json"
    assert json.loads(shipped.read_text()) == generate_columns(load_crds(folder)), (
        "regenerate with scripts/printer-columns"
    )


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("app=web", {"app": "web"}, True),
        ("app==web", {"app": "orders"}, False),
        ("app!=web", {}, True),
        ("app=web,version=v1", {"app": "web", "version": "v2"}, False),
        ("version in (v1, v2)", {"version": "v2"}, True),
        ("version in (v1,v2)", {}, False),
        ("version notin (v1)", {}, True),
        ("version notin (v1),app", {"version": "v2", "app": "x"}, True),
        ("app", {"app": ""}, True),
        ("!app", {"app": "x"}, False),
        ("!app", {}, True),
        ("istio.io/dataplane-mode=ambient", {"istio.io/dataplane-mode": "ambient"}, True),
        ("", {"a": "b"}, True),
    ],
)
def test_selectors_as_kubectl(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_selector(selector)(labels) is expected


@pytest.mark.parametrize("bad", ["app in v1", "a=b=c", "=x", "app in (a b)"])
def test_bad_selectors_are_refused(bad: str) -> None:
    with pytest.raises(SelectorError):
        parse_selector(bad)
