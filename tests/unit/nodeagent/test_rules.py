"""The node agent's pure parts: names, the redirection ruleset, kube-proxy rules."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ambient.netns import ZTUNNEL_MARK, mesh_prefix
from ambient.nodeagent.agent import service_rules
from ambient.nodeagent.redirection import redirection_rules
from ambient.state.proxy import ProxyState
from tests.unit.state.test_proxy_state import SVC, pod


def test_prefix_is_stable_per_state_folder_and_short(tmp_path: Path) -> None:
    a, b = mesh_prefix(tmp_path / "a"), mesh_prefix(tmp_path / "b")
    assert a == mesh_prefix(tmp_path / "a") and a != b
    assert a.startswith("amb") and len(a) == 9


def test_redirection_rules() -> None:
    on = redirection_rules(True)
    assert "redirect to :15001" in on and "redirect to :15006" in on
    assert "udp dport 53 redirect to :15053" in on
    assert "tcp dport 15008 accept" in on
    assert f"{ZTUNNEL_MARK:#x} accept" in on  # ztunnel's own sockets are never re-captured
    # the mark check comes before any redirect in both chains
    nat = [c for c in on.split("chain ")[1:] if "type nat" in c]
    assert len(nat) == 2
    for chain in nat:
        assert chain.index("accept") < chain.index("redirect")
    off = redirection_rules(False)
    # off keeps the NAT base chains and drops every redirect
    assert "redirect" not in off and "flush table inet ambient" in off
    assert "hook prerouting" in off and "hook output" in off
    # both keep a conntrack rule in each chain: conntrack stays on in the namespace
    for script in (on, off):
        chains = [c for c in script.split("chain ")[1:] if "type nat" in c]
        assert len(chains) == 2 and all("ct state" in chain for chain in chains)
        # and both route the replies of ztunnel's connections made as the caller back to it
        assert "meta mark & 0xfff == 0x539 ct mark set 0x111" in script
        assert "ct mark & 0xfff == 0x111 meta mark set 0x111" in script
        assert "type route hook output" in script


def test_service_rules_dnat_each_vip_port_to_healthy_endpoints() -> None:
    state = ProxyState("node-1")
    state.apply([SVC, pod(1), pod(2), pod(3, healthy=False)], [])
    script = service_rules(state.services.values(), state)
    assert "ip daddr 127.20.0.1 tcp dport 80 goto svc0" in script
    assert "numgen random mod 2" in script
    assert "dnat to 127.10.0.1:8080" in script and "dnat to 127.10.0.2:8080" in script
    assert "127.10.0.3" not in script  # unhealthy endpoints get no traffic
    empty = ProxyState("node-1")
    empty.apply([SVC], [])
    assert "reject with tcp reset" in service_rules(empty.services.values(), empty)


@pytest.mark.skipif(shutil.which("nft") is None, reason="needs the nft tool")
def test_rulesets_parse_with_nft() -> None:
    """nft's own parser accepts both scripts (check mode: nothing is loaded)."""
    state = ProxyState("node-1")
    state.apply([SVC, pod(1), pod(2)], [])
    scripts = (redirection_rules(True), redirection_rules(False))
    for script in (*scripts, service_rules(state.services.values(), state)):
        body = script
        result = subprocess.run(
            ["nft", "-c", "-f", "-"], input=body, capture_output=True, text=True
        )
        if "Operation not permitted" in result.stderr:
            pytest.skip("nft -c needs CAP_NET_ADMIN here")
        assert result.returncode == 0, result.stderr
