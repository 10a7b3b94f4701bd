"""istioctl ztunnel-config's tables from a ztunnel's ``/config_dump`` (no I/O but printing).

Headers, cells, order and layout as istioctl 1.32's ``istioctl/pkg/writer/ztunnel/
configdump`` prints them: Go's tabwriter with padding 1 (certificates: 5), the last
column unpadded; workloads sorted by namespace.name then node, services by namespace
then hostname, policies by namespace then name; a missing waypoint is ``None``;
policy ACTION and SCOPE as ztunnel names them (``Allow``, ``Deny``; ``Global``,
``Namespace``, ``WorkloadSelector``; our AUDIT is ``Audit``, a dry-run policy says so).
Certificates: one row per certificate of each identity's chain (``Leaf``, then
``Intermediate``) and per root (``Root``), the serial number in hex, times RFC 3339,
VALID CERT whether now is within the certificate's validity. Connections: each local
workload's live connections, addresses shown as the service or ``pod.namespace`` they
belong to unless ``raw``.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "certificate_rows",
    "connection_rows",
    "policy_rows",
    "print_go_table",
    "service_rows",
    "waypoint_rows",
    "workload_rows",
]

HEADERS = {
    "workloads": ["NAMESPACE", "POD NAME", "ADDRESS", "NODE", "WAYPOINT", "PROTOCOL"],
    "services": ["NAMESPACE", "SERVICE NAME", "SERVICE VIP", "WAYPOINT", "ENDPOINTS"],
    "policies": ["NAMESPACE", "POLICY NAME", "ACTION", "SCOPE"],
    "certificates": [
        "CERTIFICATE NAME",
        "TYPE",
        "STATUS",
        "VALID CERT",
        "SERIAL NUMBER",
        "NOT AFTER",
        "NOT BEFORE",
    ],
    "connections": ["WORKLOAD", "DIRECTION", "LOCAL", "REMOTE", "REMOTE TARGET", "PROTOCOL"],
    "waypoints": ["NAMESPACE", "WAYPOINT POD", "NODE", "ADDRESS", "READY", "L7 OBJECTS", "VERSION"],
}


def print_go_table(headers: Sequence[str], rows: Sequence[Sequence[str]], padding: int = 1) -> None:
    """Go's ``tabwriter.NewWriter(out, 0, 8, padding, ' ', 0)``: each column but the last
    as wide as its widest cell plus ``padding``."""
    cells = [list(headers)] + [list(r) for r in rows]
    widths = [max(len(r[i]) for r in cells) + padding for i in range(len(headers) - 1)]
    for row in cells:
        line = "".join(v.ljust(widths[i]) for i, v in enumerate(row[:-1])) + row[-1]
        sys.stdout.write(line + "\n")


def _waypoint_name(destination: str | None, services: list[dict[str, Any]]) -> str:
    """istioctl's ``waypointName``: the Service whose ``namespace/hostname`` or VIP the
    waypoint address names (``None`` without one, ``NA`` if no service matches)."""
    if not destination:
        return "None"
    for svc in services:
        if f"{svc['namespace']}/{svc['hostname']}" == destination or destination in svc["vips"]:
            return str(svc["name"])
    return "NA"


def workload_rows(dump: dict[str, Any], items: list[dict[str, Any]]) -> list[list[str]]:
    ordered = sorted(items, key=lambda w: (f"{w['namespace']}.{w['name']}", w.get("node", "")))
    return [
        [
            w["namespace"],
            w["name"],
            ",".join(w["workloadIps"]) or w.get("hostname", ""),
            w.get("node", ""),
            _waypoint_name(w.get("waypoint"), dump["services"]),
            w["protocol"],
        ]
        for w in ordered
    ]


def service_rows(dump: dict[str, Any], items: list[dict[str, Any]]) -> list[list[str]]:
    healthy = {w["uid"] for w in dump["workloads"] if w["status"] == "Healthy"}
    ordered = sorted(items, key=lambda s: (s["namespace"], s["hostname"]))
    return [
        [
            s["namespace"],
            s["name"],
            ",".join(s["vips"]),
            _waypoint_name(s.get("waypoint"), dump["services"]),
            f"{len([e for e in s['endpoints'] if e in healthy])}/{len(s['endpoints'])}",
        ]
        for s in ordered
    ]


def policy_rows(items: list[dict[str, Any]]) -> list[list[str]]:
    scopes = {"GLOBAL": "Global", "NAMESPACE": "Namespace", "WORKLOAD_SELECTOR": "WorkloadSelector"}
    ordered = sorted(items, key=lambda p: (p["namespace"], p["name"]))
    return [
        [
            p["namespace"],
            p["name"],
            str(p["action"]).capitalize() + (" (dry-run)" if p.get("dryRun") else ""),
            scopes.get(str(p["scope"]), str(p["scope"])),
        ]
        for p in ordered
    ]


def _valid(cert: dict[str, Any], now: datetime) -> str:
    try:
        start = datetime.fromisoformat(cert["validFrom"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(cert["expirationTime"].replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return "false"
    return "true" if start <= now <= end else "false"


def certificate_rows(items: list[dict[str, Any]], now: datetime | None = None) -> list[list[str]]:
    now = now or datetime.now(UTC)
    rows = []
    for entry in items:
        state = "Unavailable" if "Unavailable" in entry["state"] else entry["state"]
        chain, roots = entry.get("certChain") or [], entry.get("rootCerts") or []
        if not chain:
            rows.append([entry["identity"], "NA", state, "false", "NA", "NA", "NA"])
            continue
        typed = [("Leaf" if i == 0 else "Intermediate", c) for i, c in enumerate(chain)]
        for kind, cert in [*typed, *(("Root", c) for c in roots)]:
            rows.append(
                [
                    entry["identity"],
                    kind,
                    state,
                    _valid(cert, now),
                    format(int(cert["serialNumber"]), "x"),
                    cert.get("expirationTime") or "NA",
                    cert.get("validFrom") or "NA",
                ]
            )
    return rows


def _split(address: str) -> tuple[str, str]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), port


def connection_rows(
    dump: dict[str, Any],
    namespace: str | None,
    direction: str | None,
    raw: bool,
) -> list[list[str]]:
    names: dict[str, str] = {}
    for s in dump["services"]:
        if s["vips"]:
            names[s["vips"][0].rpartition("/")[2]] = s["hostname"]
    for w in dump["workloads"]:
        if w["workloadIps"]:
            names.setdefault(w["workloadIps"][0], f"{w['name']}.{w['namespace']}")

    def lookup(address: str) -> str:
        if raw:
            return address
        host, port = _split(address)
        name = names.get(host)
        if name is None:
            return address
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return f"{name}:{port}"
        return f"[{name}]:{port}"

    rows = []
    states = sorted(
        (dump.get("workloadState") or {}).values(),
        key=lambda s: (s["info"]["namespace"], s["info"]["name"]),
    )
    for state in states:
        info = state["info"]
        if namespace and info["namespace"] != namespace:
            continue
        name = f"{info['name']}.{info['namespace']}"
        connections = state.get("connections") or {}
        if direction != "outbound":
            for c in connections.get("inbound") or []:
                rows.append(
                    [
                        name,
                        "Inbound",
                        lookup(c["actualDst"]),
                        lookup(c["src"]),
                        c["originalDst"],
                        c["protocol"],
                    ]
                )
        if direction != "inbound":
            for c in connections.get("outbound") or []:
                rows.append(
                    [
                        name,
                        "Outbound",
                        lookup(c["src"]),
                        lookup(c["actualDst"]),
                        lookup(c["originalDst"]),
                        c["protocol"],
                    ]
                )
    return rows


def waypoint_rows(items: list[dict[str, Any]]) -> list[list[str]]:
    return [
        [
            w["namespace"],
            w["name"],
            w["node"],
            w["address"],
            "true" if w["ready"] else "false",
            str(len(w.get("l7", {}).get("resources", []))),
            str(w.get("l7", {}).get("version", "")),
        ]
        for w in items
    ]
