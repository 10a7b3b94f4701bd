"""istio-cni's enrolment decision and what a ztunnel serves (``ambient.kubelet.redirection``)."""

from __future__ import annotations

from typing import Any

from ambient.kubelet.podspec import parse_pod
from ambient.kubelet.redirection import expected_in_mesh, served_in_mesh


def _pod(labels: dict[str, str], host_network: bool = False) -> Any:
    return parse_pod(
        {
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": labels},
            "spec": {"containers": [], "hostNetwork": host_network},
        }
    )


def test_expected_by_labels() -> None:
    ambient = {"istio.io/dataplane-mode": "ambient"}
    assert expected_in_mesh(_pod({}), ambient)
    assert not expected_in_mesh(_pod({}), {})
    assert expected_in_mesh(_pod(ambient), {})
    assert not expected_in_mesh(_pod({"istio.io/dataplane-mode": "none"}), ambient)
    assert not expected_in_mesh(_pod({}, host_network=True), ambient)


def test_served_needs_hbone_and_its_listener() -> None:
    dump = {
        "workloads": [
            {"uid": "K//Pod/ns/a", "namespace": "ns", "name": "a", "protocol": "HBONE"},
            {"uid": "K//Pod/ns/b", "namespace": "ns", "name": "b", "protocol": "TCP"},
            {"uid": "K//Pod/ns/c", "namespace": "ns", "name": "c", "protocol": "HBONE"},
            {"uid": "K//Pod/ns/d", "namespace": "ns", "name": "d", "protocol": "HBONE"},
            {"uid": "K//Pod/other/e", "namespace": "other", "name": "e", "protocol": "HBONE"},
        ],
        "listeners": {
            "K//Pod/ns/a": {"socks5": True, "hbone": True},
            "K//Pod/ns/b": {"socks5": True, "hbone": False},
            "K//Pod/ns/c": {"socks5": True, "hbone": False},  # not open yet
            "K//Pod/ns/d": {"netns": "x", "redirected": True, "hbone15008": True},
        },
    }
    assert served_in_mesh(dump) == {
        ("ns", "a"): True,
        ("ns", "b"): False,
        ("ns", "c"): False,
        ("ns", "d"): True,
    }
