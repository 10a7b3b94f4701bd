"""Pod statuses as a kubelet reports them (``ambient.kubelet.podstatus``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from ambient.kubelet.podspec import parse_pod
from ambient.kubelet.podstatus import ContainerRecord, pod_status

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _pod(status: dict[str, Any] | None = None, **spec: Any) -> Any:
    return parse_pod(
        {
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {"containers": [{"name": "app", "image": "img"}], **spec},
            "status": status or {},
        }
    )


def _status(pod: Any, record: ContainerRecord, **kw: Any) -> dict[str, Any]:
    return pod_status(
        pod,
        [record],
        ip="10.244.1.2",
        host_ip="192.0.2.1",
        start_time="2026-01-01T00:00:00Z",
        network_ready=True,
        now=kw.get("now", "2026-01-01T00:00:05Z"),
    )


def _conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_pending_until_started_then_running_and_ready() -> None:
    pod = _pod()
    record = ContainerRecord("app", "img", "u")
    status = _status(pod, record)
    assert status["phase"] == "Pending"
    assert status["containerStatuses"][0]["state"] == {"waiting": {"reason": "ContainerCreating"}}
    assert status["podIP"] == "10.244.1.2" and status["podIPs"] == [{"ip": "10.244.1.2"}]
    assert status["hostIPs"] == [{"ip": "192.0.2.1"}]
    record.on_started(T0, 0)
    status = _status(pod, record)
    cs = status["containerStatuses"][0]
    assert status["phase"] == "Running"
    assert cs["state"] == {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
    assert cs["containerID"].startswith("ambient://") and not cs["ready"]
    ready = _conditions(status)["Ready"]
    assert ready["status"] == "False" and ready["reason"] == "ContainersNotReady"
    assert ready["message"] == "containers with unready status: [app]"
    record.ready = record.started = True
    ready = _conditions(_status(pod, record))["Ready"]
    # None removes what the False condition had (a strategic merge patch keeps it otherwise)
    assert ready["status"] == "True" and ready["reason"] is None and ready["message"] is None


def test_crash_loop_keeps_last_termination() -> None:
    pod = _pod()
    record = ContainerRecord("app", "img", "u")
    record.on_started(T0, 0)
    first_id = record.container_id
    record.on_exited(T0 + timedelta(seconds=1), 3, "exited with code 3", started=True)
    status = _status(pod, record)["containerStatuses"][0]
    assert status["state"]["terminated"]["exitCode"] == 3
    assert status["state"]["terminated"]["reason"] == "Error"
    record.on_backoff(2.0, "p_ns(u)")
    status = _status(pod, record)["containerStatuses"][0]
    assert status["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert "back-off 2s restarting failed container=app" in status["state"]["waiting"]["message"]
    assert status["lastState"]["terminated"]["containerID"] == first_id
    record.on_started(T0 + timedelta(seconds=3), 1)
    status = _status(pod, record)["containerStatuses"][0]
    assert status["restartCount"] == 1 and status["containerID"] != first_id
    assert status["lastState"]["terminated"]["exitCode"] == 3


def test_start_error_and_config_error() -> None:
    pod = _pod()
    record = ContainerRecord("app", "img", "u")
    record.on_exited(T0, 128, "failed to start: no such file", started=False)
    term = _status(pod, record)["containerStatuses"][0]["state"]["terminated"]
    assert term["reason"] == "StartError" and term["message"] == "failed to start: no such file"
    record.on_error("CreateContainerConfigError", "env S: secretKeyRef is not supported")
    waiting = _status(pod, record)["containerStatuses"][0]["state"]["waiting"]
    assert waiting == {
        "reason": "CreateContainerConfigError",
        "message": "env S: secretKeyRef is not supported",
    }


def test_transition_times_kept_while_unchanged() -> None:
    record = ContainerRecord("app", "img", "u")
    record.on_started(T0, 0)
    record.ready = True
    before = _status(_pod(), record, now="2026-01-01T00:00:05Z")
    later = _status(_pod(before), record, now="2026-01-01T00:09:00Z")
    assert _conditions(later)["Ready"]["lastTransitionTime"] == "2026-01-01T00:00:05Z"
    record.ready = False
    flipped = _status(_pod(later), record, now="2026-01-01T00:10:00Z")
    assert _conditions(flipped)["Ready"]["lastTransitionTime"] == "2026-01-01T00:10:00Z"


def test_init_containers_and_readiness_gates_hold_ready() -> None:
    record = ContainerRecord("app", "img", "u")
    record.on_started(T0, 0)
    record.ready = True
    init = _status(_pod(initContainers=[{"name": "i"}]), record)
    assert _conditions(init)["Initialized"]["reason"] == "InitContainersNotSupported"
    assert init["phase"] == "Pending" and _conditions(init)["Ready"]["status"] == "False"
    gated = _pod(readinessGates=[{"conditionType": "example.com/lb"}])
    status = _status(gated, record)
    assert _conditions(status)["ContainersReady"]["status"] == "True"
    assert _conditions(status)["Ready"]["reason"] == "ReadinessGatesNotReady"
    opened = _pod(
        {"conditions": [{"type": "example.com/lb", "status": "True"}]},
        readinessGates=[{"conditionType": "example.com/lb"}],
    )
    assert _conditions(_status(opened, record))["Ready"]["status"] == "True"
