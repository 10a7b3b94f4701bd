"""Which pod ``ambient exec --kubeconfig deploy/NAME`` runs in (``ambient.kube.podexec``)."""

from __future__ import annotations

from typing import Any

from ambient.kube.podexec import pick_pod, selector_text


def _pod(name: str, phase: str = "Running", ready: bool = True, **meta: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "creationTimestamp": "2026-12-07T10:00:00Z", **meta},
        "status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def test_selector_text() -> None:
    selector = {
        "matchLabels": {"app": "web", "tier": "a"},
        "matchExpressions": [
            {"key": "v", "operator": "In", "values": ["1", "2"]},
            {"key": "w", "operator": "NotIn", "values": ["3"]},
            {"key": "x", "operator": "Exists"},
            {"key": "y", "operator": "DoesNotExist"},
        ],
    }
    assert selector_text(selector) == "app=web,tier=a,v in (1,2),w notin (3),x,!y"
    assert selector_text({}) == ""


def test_pick_pod_running_ready_oldest() -> None:
    older = "2026-12-07T09:00:00Z"
    pods = [
        _pod("pending", phase="Pending"),
        _pod("going", deletionTimestamp="2026-12-07T11:00:00Z"),
        _pod("not-ready", ready=False, creationTimestamp=older),
        _pod("ready-new"),
        _pod("ready-old", creationTimestamp=older),
    ]
    chosen = pick_pod(pods)
    assert chosen is not None and chosen["metadata"]["name"] == "ready-old"
    assert pick_pod(pods[:3]) == pods[2]  # not ready, but running: still a pod to run in
    assert pick_pod(pods[:2]) is None
