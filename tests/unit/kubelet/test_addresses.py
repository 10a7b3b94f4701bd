"""Pod addresses from a node's podCIDR (``ambient.kubelet.addresses``)."""

from __future__ import annotations

import pytest

from ambient.kubelet.addresses import PodCidr, PodRoutes, interface_name, is_local_address


def test_round_robin_from_the_third_address() -> None:
    cidr = PodCidr("10.244.1.0/29")  # .2 to .6
    assert cidr.allocate("a") == "10.244.1.2"
    assert cidr.allocate("b") == "10.244.1.3"
    assert cidr.allocate("a") == "10.244.1.2"  # the same pod, the same address
    cidr.release("a")
    assert cidr.allocate("c") == "10.244.1.4"  # a freed address is not given out at once
    assert cidr.allocate("d") == "10.244.1.5"
    assert cidr.allocate("e") == "10.244.1.6"
    assert cidr.allocate("f") == "10.244.1.2"  # wrapped around to the free one


def test_a_pod_keeps_its_address_if_free_and_in_range() -> None:
    cidr = PodCidr("10.244.1.0/24")
    assert cidr.allocate("a", "10.244.1.77") == "10.244.1.77"
    assert cidr.allocate("b", "10.244.1.77") == "10.244.1.78"  # taken: after the highest kept
    assert cidr.allocate("c", "10.244.2.9") == "10.244.1.79"  # another node's
    assert cidr.allocate("d", "10.244.1.1") == "10.244.1.80"  # reserved
    assert cidr.owns("10.244.1.254") and not cidr.owns("10.244.1.255")


def test_full_range() -> None:
    cidr = PodCidr("10.244.1.0/30")  # .0 network, .1 reserved, .3 broadcast: only .2
    assert cidr.allocate("a") == "10.244.1.2"
    with pytest.raises(RuntimeError, match="full"):
        cidr.allocate("b")
    with pytest.raises(ValueError, match="IPv4 range"):
        PodCidr("fd00::/64")


def test_loopback_twins() -> None:
    cidr = PodCidr("10.244.3.0/24", loopback=True)
    assert cidr.allocate("a") == "127.244.3.2"
    assert cidr.owns("127.244.3.9") and not cidr.owns("10.244.3.9")
    assert cidr.allocate("b", "127.244.3.40") == "127.244.3.40"


def test_interface_names_fit_and_differ() -> None:
    a = interface_name("https://10.0.0.1:6443", "node-1")
    assert len(a) <= 15 and a.startswith("lo:ak")
    assert a != interface_name("https://10.0.0.1:6443", "node-2")
    assert a != interface_name("https://10.0.0.2:6443", "node-1")


def test_routes_only_to_other_hosts_nodes() -> None:
    def node(name: str, cidr: str, ip: str) -> dict[str, object]:
        return {
            "metadata": {"name": name},
            "spec": {"podCIDR": cidr},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
        }

    assert is_local_address("127.0.0.1") and not is_local_address("192.0.2.77")
    routes = PodRoutes(["node-1"])
    wanted = routes.wanted(
        [
            node("node-1", "10.244.1.0/24", "192.0.2.77"),  # ours
            node("node-2", "10.244.2.0/24", "127.0.0.1"),  # another node of this host
            node("node-3", "10.244.3.0/24", "192.0.2.78"),  # another host's
            {"metadata": {"name": "node-4"}, "spec": {}, "status": {}},  # no podCIDR yet
        ]
    )
    assert wanted == {"10.244.3.0/24": "192.0.2.78"}
