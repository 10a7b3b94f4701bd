"""``ambient up --netns``: transparent capture, policy on plaintext, live enrolment (root only).

One mesh for the module (tests/netns/mesh): ``web`` on node-1 and ``orders``
on node-2 in the enrolled namespace ``shop``; ``client`` in ``outside``, not
in the mesh. Every client is an unmodified program (curl, urllib) with no
proxy settings, run inside its pod's namespace by ``ambient exec``.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ambient.netns import mesh_prefix
from tests.e2e.harness import AMBIENT, Mesh, clean_env, wait_for

pytestmark = pytest.mark.slow

MESH_DIR = Path(__file__).parent / "mesh"
STRICT = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: shop}
spec:
  mtls: {mode: STRICT}
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    base = tmp_path_factory.mktemp("netns")
    running = Mesh(MESH_DIR, base / "state", base / "up.log", up_args=("--netns",)).start(wait=60)
    try:
        yield running
    finally:
        running.stop()
        running.run("down")


def netns_of(mesh: Mesh, pod_prefix: str) -> str:
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    prefix = f"{mesh_prefix(mesh.state_dir)}-{pod_prefix}"
    found = [line.split()[0] for line in names.splitlines() if line.startswith(prefix)]
    assert found, f"no network namespace {prefix}*: {names}"
    return found[0]


def redirected(netns: str) -> bool:
    table = subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "list", "table", "inet", "ambient"],
        capture_output=True,
        text=True,
    ).stdout
    return "redirect to :15001" in table


def curl(
    mesh: Mesh, url: str, source: str = "deploy/web", namespace: str = "shop"
) -> subprocess.CompletedProcess[str]:
    return mesh.exec(source, "curl", "-sS", "-m", "10", url, namespace=namespace)


def test_unmodified_curl_reaches_a_service_by_name_and_only_hbone_crosses_nodes(
    mesh: Mesh, tmp_path: Path
) -> None:
    if shutil.which("tcpdump") is None:
        pytest.skip("needs tcpdump (Debian package tcpdump; the Makefile installs it)")
    node1 = f"{mesh_prefix(mesh.state_dir)}-node.node-1"
    pcap = tmp_path / "node-1.pcap"
    dump = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            node1,
            "tcpdump",
            "-Z",
            "root",
            "-i",
            "eth0",
            "-nn",
            "-U",
            "-w",
            str(pcap),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert dump.stderr is not None
        assert "listening on eth0" in dump.stderr.readline()
        answers = []
        for name in ("orders", "orders.shop", "orders.shop.svc.cluster.local"):
            result = curl(mesh, f"http://{name}:8080/secret-path")
            assert result.returncode == 0, result.stderr
            answers.append(json.loads(result.stdout))
        # the pcap file header is 24 bytes: wait for packets to be written
        wait_for("tcpdump to write packets", lambda: pcap.stat().st_size > 24, timeout=10)
    finally:
        dump.send_signal(signal.SIGINT)
        dump.wait(10)
        tail = dump.stderr.read() if dump.stderr is not None else ""
        if dump.stderr is not None:
            dump.stderr.close()
    for answer in answers:
        assert answer["app"] == "orders"
        assert answer["peer_identity"] == "spiffe://cluster.local/ns/shop/sa/web"
    text = subprocess.run(
        ["tcpdump", "-nn", "-r", str(pcap)], capture_output=True, text=True
    ).stdout.splitlines()
    # IGMP membership reports (the kernel's multicast housekeeping when a link comes up,
    # from 0.0.0.0) are not traffic between pods: every other IP packet must be HBONE.
    ip_lines = [line for line in text if " IP " in line and ": igmp " not in line]
    assert ip_lines, f"no packet crossed node-1's link: {text} {pcap.stat().st_size} {tail}"
    for line in ip_lines:
        src, dst = line.split(" IP ")[1].split(":")[0].split(" > ")
        assert src.endswith(".15008") or dst.endswith(".15008"), f"not HBONE: {line}"
    payload = subprocess.run(
        ["tcpdump", "-nn", "-A", "-r", str(pcap)], capture_output=True, text=True
    ).stdout
    assert "secret-path" not in payload and "HTTP/1" not in payload


def pod_ip(mesh: Mesh, prefix: str, namespace: str = "shop") -> str:
    workloads = mesh.workloads(namespace)
    ip: str = workloads[next(n for n in workloads if n.startswith(prefix))]["workloadIps"][0]
    return ip


def test_the_process_model_serves_pods_from_ztunnel_processes(mesh: Mesh) -> None:
    status = mesh.status()
    assert status["mode"] == "processes (netns)"
    assert {c["name"] for c in status["components"]} >= {"ztunnel/node-1", "ztunnel/node-2"}


def test_the_application_sees_its_callers_pod_address(mesh: Mesh) -> None:
    """As Istio's in-pod mode: ztunnel connects to the app from the caller's address."""
    web = pod_ip(mesh, "web")
    orders = pod_ip(mesh, "orders")
    client = pod_ip(mesh, "client", "outside")
    # over HBONE across nodes (orders on node-2 -> web on node-1)
    result = curl(mesh, f"http://{web}:8080/", source="deploy/orders")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["app"] == "web" and answer["peer_identity"] is None  # web reads no PROXY header
    assert answer["peer"].rpartition(":")[0] == orders != web
    # plaintext from outside the mesh, captured at web's 15006 (same node)
    result = curl(mesh, f"http://{web}:8080/", source="client", namespace="outside")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["peer"].rpartition(":")[0] == client
    # many connections in a row: every reply finds its way back to ztunnel
    for _ in range(20):
        again = curl(mesh, f"http://{web}:8080/", source="deploy/orders")
        assert again.returncode == 0, again.stderr


def test_out_of_mesh_client_is_accepted_in_permissive_and_refused_in_strict(
    mesh: Mesh, tmp_path: Path
) -> None:
    outside = dict(source="client", namespace="outside")
    answer = json.loads(curl(mesh, "http://orders.shop:8080/", **outside).stdout)
    assert answer["app"] == "orders" and answer["peer_identity"] is None
    policy = tmp_path / "strict.yaml"
    policy.write_text(STRICT)
    mesh.ok("apply", "-f", str(policy))
    try:
        pod_ip = mesh.workloads()[next(n for n in mesh.workloads() if n.startswith("orders"))][
            "workloadIps"
        ][0]

        def refused() -> bool:
            by_name = curl(mesh, "http://orders.shop:8080/", **outside)
            by_ip = curl(mesh, f"http://{pod_ip}:8080/", **outside)
            return by_name.returncode != 0 and by_ip.returncode != 0

        wait_for("STRICT to refuse plaintext", refused, timeout=10, every=0.2)
        # the mesh's own client still gets through, over HBONE
        assert json.loads(curl(mesh, "http://orders:8080/").stdout)["peer_identity"]
        assert "RBAC rejected" in mesh.log()
    finally:
        mesh.ok("delete", "-f", str(policy))
    wait_for(
        "PERMISSIVE again",
        lambda: curl(mesh, "http://orders.shop:8080/", **outside).returncode == 0,
        timeout=10,
        every=0.2,
    )


def test_a_mesh_listener_is_never_a_destination(mesh: Mesh) -> None:
    """Plaintext from outside the mesh to ``<orders>:15006`` (captured at 15006, whose
    dial would land on 15006 again) or to another mesh port is refused at once, and so is
    an enrolled pod's connection to one (its outbound refuses before any tunnel)."""
    orders = pod_ip(mesh, "orders")
    for port in (15006, 15080, 15001, 15053):
        result = curl(mesh, f"http://{orders}:{port}/", source="client", namespace="outside")
        assert result.returncode != 0, (port, result.stdout)
        assert curl(mesh, f"http://{orders}:{port}/").returncode != 0, port
    log = mesh.log()
    assert f"-> {orders}:15006: refused, a mesh listener" in log
    assert f"-> {orders}:15006: a mesh listener, not an application port" in log
    assert curl(mesh, "http://orders:8080/").returncode == 0


def test_dns_over_tcp_in_the_pod_and_at_the_node(mesh: Mesh) -> None:
    if shutil.which("dig") is None:
        pytest.skip("needs dig (Debian package bind9-dnsutils; the Makefile installs it)")
    vip = next(s for s in mesh.json("zc", "services", "-n", "shop") if s["name"] == "orders")[
        "vips"
    ][0]
    name = "orders.shop.svc.cluster.local"
    # web is enrolled: port 53 is redirected to ztunnel's in-pod 15053, asked here both ways
    for server in (["@127.0.0.1", "-p", "15053"], []):
        result = mesh.exec("deploy/web", "dig", "+tcp", "+short", "+tries=1", *server, name)
        assert result.stdout.split() == [vip], result.stdout + result.stderr
    # a short name is qualified by the asking pod's namespace; others are refused
    short = mesh.exec("deploy/web", "dig", "+tcp", "+tries=1", "orders.shop", "A")
    assert "status: NOERROR" in short.stdout and vip in short.stdout
    refused = mesh.exec("deploy/web", "dig", "+tcp", "+tries=1", "example.com", "A")
    assert "status: REFUSED" in refused.stdout
    # client is outside the mesh: its node answers over TCP on 169.254.1.1:53
    outside = mesh.exec("client", "dig", "+tcp", "+short", "+tries=1", name, namespace="outside")
    assert outside.stdout.split() == [vip], outside.stdout + outside.stderr
    with urllib.request.urlopen("http://127.1.0.1:15000/config_dump", timeout=10) as r:
        dump = json.load(r)  # node-1's ztunnel
    web = next(v for uid, v in dump["listeners"].items() if "/web-" in uid)
    assert web["dnsTcp15053"] is True


LOOP = textwrap.dedent(
    """
    import json, os, sys, time, urllib.request
    stop, out = sys.argv[1], sys.argv[2]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    results = []
    while not os.path.exists(stop):
        started = time.time()
        try:
            with opener.open("http://orders:8080/", timeout=10) as r:
                results.append({"ok": True, "identity": json.load(r)["peer_identity"]})
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc} (at {started:.3f}, {time.time() - started:.3f}s)"
            results.append({"ok": False, "error": error})
        time.sleep(0.02)
    with open(out, "w") as f:
        json.dump(results, f)
    """
)


def test_enrol_and_unenrol_under_continuous_traffic(mesh: Mesh, tmp_path: Path) -> None:
    web_ns, orders_ns = netns_of(mesh, "pod.shop.web"), netns_of(mesh, "pod.shop.orders")
    before = mesh.pod_states()
    pids_before = {name: s.pid for name, s in before.items()}
    script, stop, out = tmp_path / "loop.py", tmp_path / "stop", tmp_path / "results.json"
    script.write_text(LOOP)
    loop = subprocess.Popen(
        _exec_argv(mesh, "deploy/web", "python3", str(script), str(stop), str(out)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=clean_env(),
    )
    try:
        for _ in range(2):
            time.sleep(1.0)
            mesh.ok("label", "namespace", "shop", "istio.io/dataplane-mode-")
            wait_for(
                "redirection removed",
                lambda: not redirected(web_ns) and not redirected(orders_ns),
                timeout=10,
            )
            time.sleep(1.0)
            mesh.ok("label", "namespace", "shop", "istio.io/dataplane-mode=ambient")
            wait_for(
                "redirection back",
                lambda: redirected(web_ns) and redirected(orders_ns),
                timeout=10,
            )
        time.sleep(1.0)
    finally:
        stop.write_text("")
        loop.wait(30)
    results: list[dict[str, Any]] = json.loads(out.read_text())
    failures = [r["error"] for r in results if not r["ok"]]
    assert not failures, f"{len(failures)} of {len(results)} requests failed: {failures[:5]}"
    identities = {r["identity"] for r in results}
    assert "spiffe://cluster.local/ns/shop/sa/web" in identities  # over HBONE while enrolled
    assert None in identities  # plain TCP while out of the mesh
    assert len(results) > 50
    after = mesh.pod_states()
    for name, pid in pids_before.items():
        assert after[name].pid == pid, f"{name} was restarted"
        assert after[name].restarts == before[name].restarts, f"{name} was restarted"


def _exec_argv(mesh: Mesh, target: str, *command: str) -> list[str]:
    return [
        AMBIENT,
        "--state-dir",
        str(mesh.state_dir),
        "exec",
        "-n",
        "shop",
        target,
        "--",
        *command,
    ]
