"""The mesh-port list stays in step with the listeners, and who may use a pod's SOCKS5 port."""

from __future__ import annotations

import ipaddress

from ambient.hbone.messages import HBONE_PORT
from ambient.ztunnel import dns, listeners, proxy
from ambient.ztunnel.selfcall import MESH_PORTS, socks_peer_allowed


def test_every_listener_of_the_mesh_is_a_mesh_port() -> None:
    ports = {
        listeners.SOCKS_PORT,
        proxy.ADMIN_PORT,
        proxy.METRICS_PORT,
        proxy.READINESS_PORT,
        listeners.OUTBOUND_CAPTURE_PORT,
        listeners.INBOUND_CAPTURE_PORT,
        dns.DNS_PORT,
        HBONE_PORT,
        15081,  # the HTTP CONNECT outbound port
    }
    assert ports == MESH_PORTS


def test_socks_peers() -> None:
    pod = ipaddress.ip_address("127.10.0.5")
    assert socks_peer_allowed(pod, pod)
    assert socks_peer_allowed(pod, ipaddress.ip_address("127.0.0.1"))
    assert not socks_peer_allowed(pod, ipaddress.ip_address("127.10.0.6"))
    assert not socks_peer_allowed(pod, ipaddress.ip_address("127.1.0.1"))
    assert not socks_peer_allowed(pod, ipaddress.ip_address("10.0.0.1"))
    v6 = ipaddress.ip_address("fd00::5")
    assert socks_peer_allowed(v6, ipaddress.ip_address("::1"))
    assert not socks_peer_allowed(v6, ipaddress.ip_address("fd00::6"))
