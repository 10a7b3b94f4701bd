"""Conntrack runs in a pod's namespace whether its redirection is on or off (root only).

Netfilter tracks connections in a namespace only while a rule needs it. If
turning the redirection off stopped tracking, connections opened while a pod
is out of the mesh would be unknown when it enrols again, and their next
packets would be redirected mid-stream (reset by the capture port): the race
behind ``test_enrol_and_unenrol_under_continuous_traffic``'s rare failures.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ambient import netns as ns
from ambient.netns import NetnsThread
from ambient.nodeagent.redirection import redirection_rules


@pytest.fixture
def pod_netns() -> Iterator[str]:
    if not Path("/proc/net/nf_conntrack").exists():
        pytest.skip("/proc/net/nf_conntrack is not available here (nf_conntrack procfs)")
    name = f"ambient-ct-{uuid.uuid4().hex[:8]}"
    ns.add_netns(name)
    try:
        yield name
    finally:
        ns.delete_netns(name)


def tracked(netns: str, port: int) -> bool:
    table = ns.run("cat", "/proc/net/nf_conntrack", netns=netns, check=False)
    return f"dport={port} " in table


@pytest.mark.parametrize("enabled", [False, True])
async def test_connections_are_tracked_with_redirection_on_and_off(
    pod_netns: str, enabled: bool
) -> None:
    ns.nft(redirection_rules(True), netns=pod_netns)
    if not enabled:
        ns.nft(redirection_rules(False), netns=pod_netns)  # as after leaving the mesh
    thread = NetnsThread(pod_netns)
    listener = await thread.listen_tcp("127.0.0.1", 0)
    try:
        port = listener.getsockname()[1]
        # a connection on loopback is exempt from redirection; conntrack still sees it
        conn = await thread.dial("127.0.0.1", port, mark=0)
        conn.close()
        assert tracked(pod_netns, port)
    finally:
        listener.close()
        thread.close()
