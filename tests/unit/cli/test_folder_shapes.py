"""Folder-mode Pod/Deployment objects and log reading (no mesh)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from ambient.cli.folderobjects import deployment_status, pod_object
from ambient.cli.printers import table
from ambient.runtime.podlogs import container_lines, follow, tail, waypoint_lines

TEMPLATE = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "shop"},
    "spec": {
        "replicas": 2,
        "template": {"spec": {"containers": [{"name": "web", "image": "web:1"}, {"name": "side"}]}},
    },
}


def pod(name: str, ready: bool, *states: str, restarts: int = 0) -> dict[str, object]:
    return {
        "namespace": "shop",
        "name": name,
        "ip": "127.10.0.9",
        "node": "node-2",
        "workload": "web",
        "workload_type": "deployment",
        "ready": ready,
        "created": 1_700_000_000.0,
        "hostIP": "127.1.0.2",
        "labels": {"app": "web"},
        "containers": [
            {"name": n, "state": s, "restarts": restarts, "ready": ready and s == "running",
             "startedAt": 1_700_000_001.0, "lastExitCode": 1 if restarts else None, "message": ""}
            for n, s in zip(["web", "side"], states, strict=False)
        ],
    }  # fmt: skip


def test_a_deployments_pod_as_kubectl_sees_it() -> None:
    manifests = {("Deployment", "shop", "web"): TEMPLATE}
    obj = pod_object(pod("web-1", False, "running", "back-off", restarts=3), manifests)
    assert obj["metadata"]["ownerReferences"] == [
        {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "controller": True}
    ]
    assert obj["spec"]["nodeName"] == "node-2" and obj["spec"]["containers"][0]["image"] == "web:1"
    assert obj["status"]["containerStatuses"][1]["state"] == {
        "waiting": {"reason": "CrashLoopBackOff", "message": ""}
    }
    assert obj["status"]["containerStatuses"][1]["lastState"] == {"terminated": {"exitCode": 1}}
    _, rows = table(
        [obj], kind="Pod", api_version="v1", wide=True, all_namespaces=False, now=1_700_000_100.0
    )
    assert rows == [
        [
            "web-1",
            "0/2",
            "CrashLoopBackOff",
            "6",
            "100s",
            "127.10.0.9",
            "node-2",
            "<none>",
            "<none>",
        ]
    ]
    fresh = pod_object(pod("web-2", False, "waiting"), manifests)
    assert fresh["status"]["phase"] == "Pending"
    _, rows = table(
        [fresh], kind="Pod", api_version="v1", wide=False, all_namespaces=False, now=1_700_000_100.0
    )
    assert rows[0][1:3] == ["0/2", "ContainerCreating"]


def test_deployment_status_counts_its_pods() -> None:
    pods = [pod("web-1", True, "running", "running"), pod("web-2", False, "running", "waiting")]
    pods.append({**pod("other", True, "running"), "workload": "orders"})
    status = deployment_status(TEMPLATE, pods)
    assert status["replicas"] == 2 and status["readyReplicas"] == 1
    assert status["unavailableReplicas"] == 1
    assert status["conditions"][0]["status"] == "False"
    none = deployment_status(TEMPLATE, [])
    assert "readyReplicas" not in none and none["replicas"] == 0


LOG = """\
--- 2026-01-01T10:00:00.000Z ambient: starting python3 app.py ---
first run
--- 2026-01-01T10:05:00.000Z ambient: exited with code 1 ---
--- 2026-01-01T10:05:01.000Z ambient: starting python3 app.py (restart 1) ---
second run
still second
"""


def test_container_lines_drop_notes_and_since_starts_at_the_run_then() -> None:
    assert container_lines(LOG) == ["first run", "second run", "still second"]
    at = datetime(2026, 1, 1, 10, 6, tzinfo=UTC)
    assert container_lines(LOG, at) == ["second run", "still second"]
    early = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
    assert container_lines(LOG, early) == ["first run", "second run", "still second"]
    assert tail(container_lines(LOG), 1) == ["still second"]
    assert tail(container_lines(LOG), 0) == [] and len(tail(container_lines(LOG), -1)) == 3


def test_waypoint_lines_by_tag_and_time() -> None:
    text = (
        "10:00:00 INFO  ambient.access [shop/waypoint]  request complete a\n"
        "10:00:01 INFO  ambient.access  connection complete b\n"
        "10:00:05 INFO  ambient.access [shop/other]  request complete c\n"
        "10:00:09 INFO  ambient.waypoint [shop/waypoint]  d\n"
    )
    now = datetime(2026, 1, 1, 10, 0, 10, tzinfo=UTC)
    assert [x[-1] for x in waypoint_lines([text], "shop/waypoint", now=now)] == ["a", "d"]
    since = datetime(2026, 1, 1, 10, 0, 5, tzinfo=UTC)
    assert [x[-1] for x in waypoint_lines([text], "shop/waypoint", since, now)] == ["d"]


def test_follow_yields_complete_lines_as_they_come(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_text("old\n")
    reader = follow(path, len("old\n"))
    assert next(reader) == ""
    with path.open("a") as handle:
        handle.write("new li")
    assert next(reader) == ""
    with path.open("a") as handle:
        handle.write("ne\nand more\n")
    assert [next(reader), next(reader)] == ["new line", "and more"]
