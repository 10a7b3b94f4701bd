"""istioctl's ztunnel-config shapes on a running mesh (issue 17 item 2): certificates with
CA rows and serial numbers, live connections, log levels changed through ztunnel's
``/logging``, and the admin endpoints as ztunnel's.

Real ``ambient`` processes on examples/shop + the waypoint example.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import pytest
from cryptography import x509

from tests.e2e.harness import AMBIENT, REPO, Mesh, clean_env, wait_for
from tests.e2e.test_waypoint import shop_with_waypoint

pytestmark = pytest.mark.slow

ADMIN = "http://127.1.0.1:15000"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    yield from shop_with_waypoint(tmp_path_factory.mktemp("zc"))


def test_certificates_have_istioctls_columns_ca_rows_and_serials(mesh: Mesh) -> None:
    table = mesh.ok("zc", "certificates")
    header, *rows = table.splitlines()
    assert header.split() == [
        "CERTIFICATE", "NAME", "TYPE", "STATUS", "VALID", "CERT", "SERIAL", "NUMBER", "NOT",
        "AFTER", "NOT", "BEFORE",
    ]  # fmt: skip
    cells = [r.split() for r in rows]
    # istioctl's tabwriter for this table: padding 5
    assert header.index("TYPE") == max(len(c[0]) for c in [["CERTIFICATE NAME"], *cells]) + 5
    assert {c[1] for c in cells} == {"Leaf", "Root"}
    assert all(c[2] == "Available" and c[3] == "true" for c in cells)
    entries = mesh.json("zc", "certificates")
    web = next(e for e in entries if e["identity"].endswith("/sa/web"))
    leaf = x509.load_pem_x509_certificate(web["certChain"][0]["pem"].encode())
    assert int(web["certChain"][0]["serialNumber"]) == leaf.serial_number
    assert [web["identity"], "Leaf", "Available", "true", format(leaf.serial_number, "x")] in [
        c[:5] for c in cells
    ]
    root = x509.load_pem_x509_certificate(web["rootCerts"][0]["pem"].encode())
    assert [web["identity"], "Root", "Available", "true", format(root.serial_number, "x")] in [
        c[:5] for c in cells
    ]
    assert root.subject == leaf.issuer


def test_connections_lists_live_connections(mesh: Mesh) -> None:
    upload = subprocess.Popen(
        [AMBIENT, "--state-dir", str(mesh.state_dir), "exec", "-n", "shop", "deploy/web", "--",
         "timeout", "90", "curl", "-s", "-X", "POST", "-T", "/dev/zero", "--limit-rate", "1k",
         "http://orders:8080/api/upload"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=clean_env(), cwd=REPO,
        start_new_session=True,
    )  # fmt: skip
    try:

        def rows() -> list[list[str]] | None:
            found = [
                line.split() for line in mesh.ok("zc", "connections", "-n", "shop").splitlines()
            ]
            outbound = [r for r in found[1:] if r[0].startswith("web-") and r[1] == "Outbound"]
            return found if outbound else None

        table = wait_for("web's connection in zc connections", rows, timeout=15)
        assert table[0] == [
            "WORKLOAD",
            "DIRECTION",
            "LOCAL",
            "REMOTE",
            "REMOTE",
            "TARGET",
            "PROTOCOL",
        ]
        out = next(r for r in table[1:] if r[0].startswith("web-") and r[1] == "Outbound")
        # web -> the waypoint (the namespace is bound to it) over HBONE, asked for orders:8080
        assert out[3].startswith("waypoint-") and out[3].endswith(".shop:15008"), out
        assert out[4:] == ["orders:8080", "HBONE"], out
        inbound = [r for r in table[1:] if r[0].startswith("orders-") and r[1] == "Inbound"]
        assert inbound and inbound[0][3].startswith("waypoint-") and inbound[0][5] == "HBONE"
        raw = [line.split() for line in mesh.ok("zc", "connections", "--raw").splitlines()[1:]]
        assert any(r[1] == "Outbound" and r[3].startswith("127.10.") for r in raw), raw
        assert all(r[1] == "Inbound" for r in [line.split() for line in mesh.ok(
            "zc", "connections", "--direction", "inbound").splitlines()[1:]])  # fmt: skip
    finally:
        os.killpg(upload.pid, signal.SIGKILL)  # ambient exec and the curl it runs
        upload.wait(10)
    wait_for(
        "web's connection gone (the waypoint's pooled upstream ones may stay)",
        lambda: (
            not any(line.startswith("web-") for line in mesh.ok("zc", "connections").splitlines())
        ),
        timeout=15,
    )


def access_lines(mesh: Mesh) -> int:
    logs = sorted((mesh.state_dir / "logs").glob("ambient-system_ztunnel-*.log"))
    return sum(p.read_text().count("INFO  ambient.access  connection complete") for p in logs)


def test_log_levels_change_live(mesh: Mesh) -> None:
    out = mesh.ok("zc", "log")
    assert out == (
        "ztunnel-node-1.ambient-system:\ncurrent log level is info\n\n"
        "ztunnel-node-2.ambient-system:\ncurrent log level is info\n\n"
    )
    try:
        out = mesh.ok("zc", "log", "--level", "info,access=off")
        assert out.count("current log level is access=off,info") == 2, out
        before = access_lines(mesh)
        mesh.curl("http://orders:8080/api/quiet")
        time.sleep(0.5)  # lines are written at close; nothing may come (no signal for "nothing")
        assert access_lines(mesh) == before
        out = mesh.ok("zc", "log", "--node", "node-1", "--level", "access:debug")
        assert out == "ztunnel-node-1.ambient-system:\ncurrent log level is access=debug,info\n\n"
        # the seed guide's `istioctl ztunnel-config log <ztunnel-pod> --level=...`
        out = mesh.ok("zc", "log", "ztunnel-node-2.istio-system", "--level=info,access=debug")
        assert out == "ztunnel-node-2.ambient-system:\ncurrent log level is access=debug,info\n\n"
        other = mesh.run("zc", "log", "web-1.shop")
        assert other.returncode == 1
        assert "only supported by Ztunnel proxies: web-1" in other.stderr
    finally:
        out = mesh.ok("zc", "log", "-r")
    assert out.count("current log level is info") == 2
    before = access_lines(mesh)
    mesh.curl("http://orders:8080/api/loud")
    wait_for("access lines again", lambda: access_lines(mesh) > before, timeout=10)
    bad = mesh.run("zc", "log", "--level", "loud")
    assert bad.returncode == 1 and "Invalid level provided: loud" in bad.stderr
    both = mesh.run("zc", "log", "--level", "info", "-r")
    assert both.returncode == 2 and "--level cannot be combined with --reset" in both.stderr


def test_admin_endpoints_are_ztunnels(mesh: Mesh) -> None:
    with urllib.request.urlopen(f"{ADMIN}/") as answer:
        index = answer.read().decode()
    for path in ("/config_dump", "/logging", "/stats/prometheus", "/metrics", "/healthz/ready"):
        assert path in index
    with urllib.request.urlopen("http://127.1.0.1:15020/stats/prometheus") as answer:
        assert b"istio_tcp_connections_opened_total" in answer.read()
    with urllib.request.urlopen("http://127.1.0.1:15021/healthz/ready") as answer:
        assert answer.status == 200
    request = urllib.request.Request(f"{ADMIN}/logging", method="POST")
    with urllib.request.urlopen(request) as answer:
        assert answer.read() == b"current log level is info\n"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{ADMIN}/logging")
    assert refused.value.code == 405
    refused.value.close()


def test_proxy_config_shows_what_the_waypoint_compiled(mesh: Mesh) -> None:
    mesh.curl("http://orders:8080/api/health")  # the clusters' runtime state exists once used
    routes = mesh.ok("pc", "routes", "deploy/waypoint", "-n", "shop")
    header, *rows = routes.splitlines()
    assert header.split() == [
        "NAME", "VHOST", "NAME", "DOMAINS", "MATCH", "VIRTUAL", "SERVICE", "BACKENDS",
    ]  # fmt: skip
    orders = [r.split() for r in rows if "orders.shop.svc.cluster.local" in r.split()[0]]
    v1 = "outbound|8080|v1|orders.shop.svc.cluster.local"
    v2 = "outbound|8080|v2|orders.shop.svc.cluster.local"
    # the seed guide's canary: x-canary: always to v2, else 90/10
    assert ["inbound|http|8080", "*", "/*", "header:x-canary=always", "orders.shop", f"{v2}=1"] in [
        r[1:] for r in orders
    ], routes
    assert ["inbound|http|8080", "*", "/*", "orders.shop", f"{v1}=90,{v2}=10"] in [
        r[1:] for r in orders
    ], routes
    clusters = [r.split() for r in mesh.ok("pc", "clusters", "waypoint", "-n", "shop").splitlines()]
    assert clusters[0] == [
        "SERVICE",
        "FQDN",
        "PORT",
        "SUBSET",
        "DIRECTION",
        "TYPE",
        "DESTINATION",
        "RULE",
    ]
    assert [
        "orders.shop.svc.cluster.local",
        "8080",
        "v1",
        "outbound",
        "EDS",
        "orders.shop",
    ] in clusters
    assert [
        "orders.shop.svc.cluster.local",
        "8080",
        "v2",
        "outbound",
        "EDS",
        "orders.shop",
    ] in clusters
    endpoints = [
        r.split()
        for r in mesh.ok(
            "pc", "endpoints", "deploy/waypoint", "-n", "shop", "--subset", "v2"
        ).splitlines()
    ]
    assert endpoints[0] == ["ENDPOINT", "STATUS", "OUTLIER", "CHECK", "CLUSTER"]
    assert len(endpoints[1:]) == 2 and all(e[1:] == ["HEALTHY", "OK", v2] for e in endpoints[1:])
    listeners = mesh.ok("pc", "listeners", "deploy/waypoint", "-n", "shop")
    rows_ = [r.split() for r in listeners.splitlines()]
    assert rows_[0] == ["ADDRESSES", "PORT", "MATCH", "DESTINATION"]
    assert any(r[1:] == ["15008", "HBONE", "waypoint"] for r in rows_)
    assert any(
        r[1:3] == ["8080", "HTTP"] and r[-1].endswith("|orders.shop.svc.cluster.local")
        for r in rows_
    )
    dump = json.loads(mesh.ok("pc", "all", "deploy/waypoint", "-n", "shop", "-o", "json"))
    (config,) = dump
    by_name = {c["name"]: c for c in config["clusters"]}
    assert by_name[v1]["circuitBreakers"]["maxConnections"] > 0
    assert {e["health"] for e in by_name[v1]["endpoints"]} == {"HEALTHY"}
    missing = mesh.run("pc", "routes", "deploy/nope", "-n", "shop")
    assert missing.returncode == 1 and 'no pod of waypoint "nope"' in missing.stderr


def test_waypoint_list_and_status_as_istioctl(mesh: Mesh) -> None:
    listed = [line.split() for line in mesh.ok("waypoint", "list", "-n", "shop").splitlines()]
    assert listed == [
        ["NAME", "REVISION", "TRAFFIC", "TYPE", "PROGRAMMED"],
        ["waypoint", "default", "service", "True"],
    ]
    status = mesh.ok("waypoint", "status", "-A").splitlines()
    assert status[0].split() == ["NAMESPACE", "NAME", "STATUS", "TYPE", "REASON", "MESSAGE"]
    assert status[1].split()[:5] == ["shop", "waypoint", "True", "Programmed", "Programmed"]
    assert mesh.ok("waypoint", "list", "-n", "empty") == "No waypoints found.\n"
