"""The node agent's socket for a ztunnel process: listings, long polls and refusals.

The agent behind the socket is a stand-in (``RecordingAgent``): making namespaces
needs root and is covered by tests/netns; this tests the channel itself, over a
real Unix socket, with the real client.
"""

from __future__ import annotations

import asyncio
import ipaddress
import stat
from pathlib import Path
from typing import Any

import pytest

from ambient.httpclient import unix_request
from ambient.netns import NetnsError
from ambient.nodeagent.agent import NodeAgent
from ambient.nodeagent.podsocket import PodSocketClient, PodSocketServer


class RecordingAgent:
    """Stand-in for ``NodeAgent``: pods by node, and what it was asked to do."""

    def __init__(self) -> None:
        self.pods: dict[str, dict[str, Any]] = {
            "10.244.0.2": {"netns": "amb-pod.shop.web", "inode": 7, "node": "node-1"},
            "10.244.0.3": {"netns": "amb-pod.shop.orders", "inode": 8, "node": "node-2"},
        }
        self.redirections: list[tuple[str, bool]] = []
        self.served_calls: list[tuple[str, bool]] = []
        self.server: PodSocketServer | None = None
        self.pod_cidr = ipaddress.ip_network("10.244.0.0/16")

    def pods_on(self, node: str) -> dict[str, dict[str, Any]]:
        return {
            ip: {"netns": p["netns"], "inode": p["inode"]}
            for ip, p in self.pods.items()
            if p["node"] == node
        }

    async def set_redirection_ip(self, ip: str, enabled: bool) -> None:
        self.redirections.append((ip, enabled))

    async def served(self, ip: str, enabled: bool) -> None:
        self.served_calls.append((ip, enabled))

    async def add_pod(self, namespace: str, name: str, node: str, ip: str) -> str:
        netns = f"amb-pod.{namespace}.{name}"
        self.pods[ip] = {"netns": netns, "inode": 9, "node": node}
        assert self.server is not None
        self.server.pods_changed()
        return netns

    async def remove_pod(self, ip: str) -> None:
        self.pods.pop(ip, None)
        assert self.server is not None
        self.server.pods_changed()


@pytest.fixture
async def served(tmp_path: Path) -> Any:
    agent = RecordingAgent()
    server = agent.server = PodSocketServer(agent, "node-1")
    path = tmp_path / "nodeagent.sock"
    await server.start(path)
    yield agent, server, path
    await server.close()


async def test_the_socket_is_private_and_lists_only_its_nodes_pods(served: Any) -> None:
    _, _, path = served
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    client = PodSocketClient(path, "node-1")
    await client.start()
    try:
        assert client.pods == {"10.244.0.2": {"netns": "amb-pod.shop.web", "inode": 7}}
    finally:
        await client.close()


async def test_a_change_wakes_the_long_poll_and_the_client_reconciles(served: Any) -> None:
    agent, _, path = served
    client = PodSocketClient(path, "node-1")
    woken = asyncio.Event()
    client.on_change = woken.set
    await client.start()
    try:
        assert await client.add_pod("shop", "waypoint", "node-1", "10.244.0.9") == (
            "amb-pod.shop.waypoint"
        )
        assert "10.244.0.9" in client.pods and woken.is_set()
        woken.clear()
        await agent.remove_pod("10.244.0.9")  # the agent's own change: the long poll answers
        await asyncio.wait_for(woken.wait(), 5)
        assert "10.244.0.9" not in client.pods
        with pytest.raises(NetnsError, match="is on node node-2, not node-1"):
            await client.add_pod("shop", "other", "node-2", "10.244.0.10")
    finally:
        await client.close()


async def test_a_ztunnel_cannot_act_on_another_nodes_pod(served: Any) -> None:
    agent, _, path = served
    client = PodSocketClient(path, "node-1")
    await client.start()
    try:
        await client._call("/redirection", {"ip": "10.244.0.2", "enabled": True})
        assert agent.redirections == [("10.244.0.2", True)]
        with pytest.raises(NetnsError, match=r"10\.244\.0\.3 is not a pod on node node-1 \(403\)"):
            await client._call("/redirection", {"ip": "10.244.0.3", "enabled": True})
        with pytest.raises(NetnsError, match=r"not a pod on node node-1 \(403\)"):
            await client._call("/pods/delete", {"ip": "10.244.0.3"})
        assert "10.244.0.3" in agent.pods and agent.redirections == [("10.244.0.2", True)]
        assert agent.served_calls == [("10.244.0.2", True)]  # after the redirection, own pods
    finally:
        await client.close()


async def test_bad_requests_name_the_field(served: Any) -> None:
    _, _, path = served
    status, answer = await unix_request(str(path), "POST", "/pods", {"namespace": "shop"})
    assert status == 400 and answer["error"] == "body: missing field(s) name, ip"
    wrong = {"namespace": "shop", "name": "w", "ip": "127.0.0.1"}
    status, answer = await unix_request(str(path), "POST", "/pods", wrong)
    assert status == 400 and "127.0.0.1 is not a pod address (10.244.0.0/16)" in answer["error"]
    status, answer = await unix_request(str(path), "POST", "/redirection", {"enabled": True})
    assert status == 400 and "field ip" in answer["error"]
    status, answer = await unix_request(str(path), "GET", "/pods?after=x")
    assert status == 400 and answer["error"].startswith("after:")


async def test_netns_thread_refuses_a_namespace_that_is_not_listed(tmp_path: Path) -> None:
    client = PodSocketClient(tmp_path / "absent.sock", "node-1")
    client.pods = {"10.244.0.2": {"netns": "amb-does-not-exist", "inode": 1}}
    assert client.netns_thread("10.244.0.2") is None  # no such namespace
    assert client.netns_thread("10.244.0.99") is None  # not one of this node's pods


async def test_a_waypoint_pod_gets_the_sandbox_the_runtime_made_whatever_its_range(
    served: Any,
) -> None:
    """On a real cluster the waypoint pod's namespace is its sandbox (adopted at CNI ADD),
    and the cluster's pod range need not be the --netns one."""
    agent, _, path = served
    agent.pods["192.168.7.9"] = {"netns": "/var/run/netns/cni-1234", "inode": 11,
                                 "node": "node-1"}  # fmt: skip
    client = PodSocketClient(path, "node-1")
    await client.start()
    try:
        answer = await client._call(
            "/pods", {"namespace": "shop", "name": "waypoint-0", "ip": "192.168.7.9"}
        )
        assert answer == {"netns": "/var/run/netns/cni-1234"}
        with pytest.raises(NetnsError, match=r"192\.168\.7\.10 is not a pod address"):
            await client._call("/pods", {"namespace": "shop", "name": "w", "ip": "192.168.7.10"})
    finally:
        await client.close()


async def test_ambient_node_agent_refuses_a_pod_the_runtime_has_not_reported(
    tmp_path: Path,
) -> None:
    """ambient node-agent makes no pod namespaces of its own (no --netns topology)."""
    agent = NodeAgent(tmp_path)
    with pytest.raises(NetnsError, match=r"has not reported its sandbox \(CNI ADD\) yet"):
        await agent.add_pod("shop", "waypoint-0", "node-1", "10.244.3.4")
