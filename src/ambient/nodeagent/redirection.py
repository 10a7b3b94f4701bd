"""The nftables rules that capture an enrolled pod's traffic for its node's ztunnel.

istio-cni's job in Istio's in-pod mode: in the pod's own namespace, inbound TCP
goes to ztunnel's 15006 (HBONE on 15008 passes), outbound TCP to 15001, DNS to
15053; ztunnel's own sockets (mark ``0x539``) and loopback are exempt. The node
agent installs them once ztunnel's in-pod listeners are open
(``ztunnel.capture``), and removes them before the listeners close.
"""

from __future__ import annotations

from ambient.hbone.messages import HBONE_PORT
from ambient.netns import SPOOF_MARK, ZTUNNEL_MARK
from ambient.ztunnel.dns import DNS_PORT
from ambient.ztunnel.listeners import INBOUND_CAPTURE_PORT, OUTBOUND_CAPTURE_PORT

__all__ = ["REDIRECT_TABLE", "redirection_rules"]

REDIRECT_TABLE = "ambient"  # ``table inet ambient`` in each enrolled pod's namespace


def redirection_rules(enabled: bool) -> str:
    """The nftables script that turns the pod's redirection on or off, atomically.

    Both states keep conntrack running in the namespace, and that is what makes
    switching safe. Netfilter tracks connections in a namespace only while some
    rule needs conntrack; the redirect rules do, an empty NAT chain does not.
    Without the ``ct`` rule kept in each chain, removing the redirects stopped
    tracking: replies of connections redirected earlier were no longer
    translated, and worse, connections opened while the pod was out of the mesh
    were unknown to conntrack when the redirects came back, so their next packets
    were taken for new connections (``nf_conntrack_tcp_loose``) and redirected
    mid-stream: a reply sent to 15006 was answered with a reset. (The ``ct``
    rule never matches in a NAT chain, which sees only a connection's first
    packet; it is there for its side effect.)"""
    mark = f"    meta mark & 0xfff == {ZTUNNEL_MARK:#x} accept\n"
    # Replies of connections ztunnel made into the pod as their caller go back to ztunnel
    # (see ``ztunnel.capture``); in both states, like conntrack.
    spoof = (
        "  chain spoof_pre {\n"
        "    type filter hook prerouting priority mangle; policy accept;\n"
        f"    meta mark & 0xfff == {ZTUNNEL_MARK:#x} ct mark set {SPOOF_MARK:#x}\n"
        "  }\n"
        "  chain spoof_out {\n"
        "    type route hook output priority mangle; policy accept;\n"
        f"    meta mark & 0xfff != {ZTUNNEL_MARK:#x} ct mark & 0xfff == {SPOOF_MARK:#x} "
        f"meta mark set {SPOOF_MARK:#x}\n"
        "  }\n"
    )
    track = "    ct state established,related accept\n"
    prerouting = "    type nat hook prerouting priority dstnat; policy accept;\n" + track
    output = "    type nat hook output priority -100; policy accept;\n" + track
    if enabled:
        prerouting += (
            '    iifname "lo" accept\n'
            + mark
            + f"    tcp dport {HBONE_PORT} accept\n"
            + f"    meta nfproto ipv4 meta l4proto tcp redirect to :{INBOUND_CAPTURE_PORT}\n"
        )
        output += (
            mark
            + f"    meta nfproto ipv4 udp dport 53 redirect to :{DNS_PORT}\n"
            + f"    meta nfproto ipv4 tcp dport 53 redirect to :{DNS_PORT}\n"
            + '    oifname "lo" accept\n'
            + f"    meta nfproto ipv4 meta l4proto tcp redirect to :{OUTBOUND_CAPTURE_PORT}\n"
        )
    return (
        f"table inet {REDIRECT_TABLE}\n"
        f"flush table inet {REDIRECT_TABLE}\n"
        f"table inet {REDIRECT_TABLE} {{\n"
        f"  chain prerouting {{\n{prerouting}  }}\n"
        f"  chain output {{\n{output}  }}\n"
        f"{spoof}"
        "}\n"
    )
