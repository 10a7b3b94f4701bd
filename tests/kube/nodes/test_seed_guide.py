"""The seed guide's scenario with ``kubectl`` on a dev cluster, end to end (issue 15 §3).

A host is a network namespace with a dev cluster inside (``tests.kube.hosts``), ``ambient
install`` applied, and ``ambient up --kubeconfig K --nodes node-1,node-2`` running in it
(with ``--netns`` in the second run). Then, as the README's walkthrough:

- ``kubectl apply -f examples/kube/shop.yaml`` (Deployments, Services, pods with
  ``image``; the test only points ``python3`` at its own interpreter, which lives under a
  0700 ``/root`` and so needs ``privileged``, and makes the app's path absolute);
- ``kubectl label namespace shop istio.io/dataplane-mode=ambient`` → ``ambient zc
  workloads`` shows every pod HBONE, none replaced or restarted;
- ``kubectl label pod legacy istio.io/dataplane-mode=none --overwrite`` opts one out;
- section 4 (STRICT, deny-all, allow web → orders): the opted-out pod and other
  identities are refused;
- ``ambient waypoint apply -n shop --enroll-namespace`` → the Gateway's ``Programmed``
  is ``True`` through kubectl's jsonpath; the L4 allow names the waypoint's identity too
  (as Istio's documentation says: behind a waypoint, the destination's ztunnel sees the
  waypoint as the caller);
- sections 6 and 7: the 90/10 canary, ``x-canary: always``, the L7 policy (200 for web,
  403 for probe and for paths outside ``/api/``), RequestAuthentication with a JWKS
  served in the host (401 for a bad token, 200 for probe with a good one);
- ``kubectl scale`` → the new endpoint gets requests; ``kubectl delete pod`` → its
  replacement answers; ``kill -9`` of the control plane → traffic flows, it is
  restarted, and a change made meanwhile reaches the ztunnels; ``ambient analyze -n
  shop`` reports no error.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from tests.kube.hosts import NetnsCluster, NetnsHost
from tests.kube.nodes.test_up import Up, wait_for
from tests.netns.conftest import netns_unavailable

pytestmark = [pytest.mark.kube, pytest.mark.slow, pytest.mark.root, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[3]
SHOP_YAML = REPO / "examples" / "kube" / "shop.yaml"
SECTION4 = REPO / "examples" / "policies" / "section4-strict-deny-all.yaml"
L7 = REPO / "examples" / "waypoint" / "l7.yaml"
ALLOW_WAYPOINT = REPO / "examples" / "kube" / "orders-allow-waypoint.yaml"
ORDERS = "http://orders:8080"
DASHBOARD_URL = re.compile(r"at (http://\S+) ")
INTO_WAYPOINT, OUT_OF_WAYPOINT = ("shop/web", "shop/waypoint"), ("shop/waypoint", "shop/orders-v1")
"""The hops through the waypoint: (source, target) workloads, a Deployment's pods named after
it (from their ReplicaSet owner, as Istio names them), not ``shop/web-6d5d49b67b-vt4k7``."""
WEB_ID = "spiffe://cluster.local/ns/shop/sa/web"
ISSUER = "https://accounts.example.com"
JWKS_PORT = 18443
KEY = ECKey.generate_key("P-256", {"kid": "guide-1", "alg": "ES256"}, private=True)
OTHER_KEY = ECKey.generate_key("P-256", {"kid": "guide-1", "alg": "ES256"}, private=True)

PRIVILEGED_WAYPOINT = json.dumps(
    {"spec": {"template": {"spec": {"containers": [
        {"name": "waypoint", "securityContext": {"privileged": True}}]}}}}
)  # fmt: skip

JWT_POLICIES = f"""
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: orders-jwt, namespace: shop}}
spec:
  targetRefs: [{{kind: Service, group: "", name: orders}}]
  jwtRules:
  - issuer: "{ISSUER}"
    jwksUri: "http://127.0.0.1:{JWKS_PORT}/jwks.json"
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: orders-require-jwt, namespace: shop}}
spec:
  targetRefs: [{{kind: Service, group: "", name: orders}}]
  action: ALLOW
  rules:
  - from:
    - source:
        requestPrincipals: ["*"]
"""


def shop_manifest() -> str:
    """``examples/kube/shop.yaml`` for this test run (see the module docstring)."""
    docs = [d for d in yaml.safe_load_all(SHOP_YAML.read_text()) if d]
    for doc in docs:
        spec = doc.get("spec") or {}
        pod = spec["template"]["spec"] if doc["kind"] == "Deployment" else spec
        for container in pod.get("containers") or []:
            command = container["command"]
            assert command[0] == "python3", command
            command[0] = sys.executable
            if command[1].startswith("examples/"):
                command[1] = str(REPO / command[1])
            container["securityContext"] = {"privileged": True}
    return yaml.safe_dump_all(docs)


class Guide:
    """``Up`` plus the guide's client calls (``ambient exec`` as a pod, curl inside)."""

    def __init__(self, up: Up, folder: Path) -> None:
        self.up = up
        self.folder = folder

    def apply(self, text: str) -> None:
        done = self.up.host.apply(self.up.cluster.cluster.kubectl, text)
        assert done.returncode == 0, done.stderr

    def ok(self, *args: str, timeout: float = 60) -> str:
        done = self.up.kubectl(*args, timeout=timeout)
        assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
        return done.stdout

    def exec(self, pod: str, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.up.ambient("exec", "-n", "shop", pod, "--", *argv, timeout=timeout)

    def status(self, pod: str, url: str, *headers: str) -> str:
        """The HTTP status of one request (``000`` when the connection failed)."""
        args = [a for h in headers for a in ("-H", h)]
        done = self.exec(pod, "curl", "-s", "-m", "10", "-o", "/dev/null", "-w",
                         "%{http_code}", *args, url)  # fmt: skip
        return done.stdout.strip() or "000"

    def answers(self, pod: str, url: str, count: int, *headers: str) -> list[dict[str, Any]]:
        """``count`` requests on one keep-alive connection (curl's URL ranges): the waypoint
        routes each one on its own. Every one must succeed."""
        args = [a for h in headers for a in ("-H", h)]
        done = self.exec(pod, "curl", "-sS", "-m", "60", "--fail-with-body", *args,
                         f"{url}?n=[1-{count}]", timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
        assert len(lines) == count, done.stdout[-2000:]
        return lines

    def dashboard_hops(self) -> dict[tuple[str, str], dict[str, Any]]:
        """``ambient dashboard --kubeconfig`` on the host while web calls orders: the
        HTTP hops through the waypoint in its graph (from the waypoint's own metrics).
        A rate needs two scrapes with requests between them, so requests go in bounded
        rounds until both hops show one."""
        log = self.folder / f"dashboard-{time.monotonic_ns()}.log"
        argv = [sys.executable, "-m", "ambient", "--kubeconfig", str(self.up.cluster.kubeconfig),
                "dashboard", "--port", "0", "--refresh", "1s", "--window", "30s"]  # fmt: skip
        process = self.up.host.spawn(argv, log)
        try:
            url = wait_for(lambda: (m := DASHBOARD_URL.search(log.read_text())) and m.group(1),
                           "the dashboard's URL", self.up, timeout=60)  # fmt: skip
            graph: dict[str, Any] = {}
            for _ in range(40):  # each round: requests, then the graph
                assert process.poll() is None, log.read_text()[-4000:]
                self.answers("deploy/web", f"{ORDERS}/api/orders", 10)
                done = self.up.host.run("curl", "-sS", "-m", "10", f"{url}api/graph")
                graph = json.loads(done.stdout) if done.returncode == 0 else {}
                hops = {
                    hop: edge
                    for edge in graph.get("edges", [])
                    for hop in (INTO_WAYPOINT, OUT_OF_WAYPOINT)
                    if edge.get("http") and (edge["source"], edge["target"]) == hop
                }
                if len(hops) == 2:
                    return hops
            edges = [e["id"] for e in graph.get("edges", []) if e.get("http")]
            pytest.fail(
                f"the dashboard shows no HTTP hops through the waypoint (HTTP hops: {edges}; "
                f"problems: {graph.get('problems')})\n{log.read_text()[-4000:]}"
            )
        finally:
            process.terminate()
            process.wait(30)

    def workloads(self) -> dict[str, dict[str, Any]]:
        done = self.up.ambient("zc", "workloads", "--workload-namespace", "shop", "-o", "json")
        return {w["name"]: w for w in json.loads(done.stdout)} if done.returncode == 0 else {}

    def pods(self, selector: str = "") -> list[dict[str, Any]]:
        args = ["get", "pods", "-n", "shop", *(["-l", selector] if selector else [])]
        items: list[dict[str, Any]] = self.up.json(*args)["items"]
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]

    def rollout(self, deployment: str) -> None:
        self.ok("rollout", "status", f"deploy/{deployment}", "-n", "shop", "--timeout=120s",
                timeout=150)  # fmt: skip

    def controlplane_pids(self) -> list[int]:
        """Live ``ambient controlplane --kubeconfig`` processes of this host."""
        found = []
        for pid in self.up.host.run("ip", "netns", "pids", self.up.host.name).stdout.split():
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"controlplane" in argv and b"--kubeconfig" in argv:
                found.append(int(pid))
        # `ip netns pids` runs in the root namespace and lists the host's processes
        return found


@pytest.fixture(scope="module", params=["addresses", "netns"])
def guide(request: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guide]:
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(reason)
    host = NetnsHost("g")
    folder = tmp_path_factory.mktemp("guide")
    try:
        cluster = NetnsCluster(host, folder / "cluster")
        try:
            done = host.ambient("install", "--kubeconfig", str(cluster.kubeconfig), timeout=180)
            assert done.returncode == 0, done.stderr
            jwks = folder / "jwks"
            jwks.mkdir()
            (jwks / "jwks.json").write_text(json.dumps(KeySet([KEY]).as_dict(private=False)))
            server = host.spawn(
                [sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                 "--directory", str(jwks), str(JWKS_PORT)],
                folder / "jwks.log",
            )  # fmt: skip
            argv = [sys.executable, "-m", "ambient", "up",
                    "--kubeconfig", str(cluster.kubeconfig), "--nodes", "node-1,node-2",
                    "--state-dir", str(folder / "state"),
                    *(["--netns"] if request.param == "netns" else [])]  # fmt: skip
            started = time.monotonic()
            process = host.spawn(argv, folder / "up.log")
            up = Up(cluster, process, folder / "state", folder / "up.log", started)
            try:
                yield Guide(up, folder)
            finally:
                up.stop()
                server.terminate()
                server.wait(10)
        finally:
            cluster.down()
    finally:
        host.remove()


def _token(key: ECKey = KEY, issuer: str = ISSUER) -> str:
    now = int(time.time())
    claims = {"iss": issuer, "sub": "alice", "iat": now, "exp": now + 600}
    return jwt.encode({"alg": "ES256", "kid": "guide-1"}, claims, key)


def _ready(obj: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (obj.get("status") or {}).get("conditions") or []
    )


def test_the_seed_guide_with_kubectl(guide: Guide) -> None:
    g, up = guide, guide.up
    wait_for(lambda: len([n for n in up.json("get", "nodes")["items"] if _ready(n)]) == 2,
             "both Nodes Ready", up)  # fmt: skip

    # -- the shop, outside the mesh ------------------------------------------------------
    g.apply(shop_manifest())
    for name in ("web", "orders-v1", "orders-v2"):
        g.rollout(name)
    g.ok("wait", "--for=condition=Ready", "pod/probe", "pod/legacy", "-n", "shop",
         "--timeout=120s", timeout=150)  # fmt: skip
    before = {p["metadata"]["uid"]: p for p in g.pods()}
    plain = json.loads(g.exec("deploy/web", "curl", "-s", f"{ORDERS}/api/orders").stdout)
    assert plain["peer_identity"] is None

    # -- section 3: enrol by label, no restart; opt one pod out --------------------------
    g.ok("label", "namespace", "shop", "istio.io/dataplane-mode=ambient")
    wait_for(
        lambda: (w := g.workloads()) and len(w) == 6 and all(
            x["protocol"] == "HBONE" for x in w.values()),
        "every shop pod HBONE in ambient zc workloads", up,
    )  # fmt: skip
    table = up.ambient("zc", "workloads", "--workload-namespace", "shop")
    assert table.returncode == 0 and table.stdout.count("HBONE") == 6, table.stdout
    after = {p["metadata"]["uid"]: p for p in g.pods()}
    assert set(after) == set(before)  # no pod replaced...
    for pod in after.values():  # ...nor restarted
        assert pod["status"]["containerStatuses"][0]["restartCount"] == 0, pod["metadata"]
    meshed = json.loads(g.exec("deploy/web", "curl", "-s", f"{ORDERS}/api/orders").stdout)
    assert meshed["peer_identity"] == WEB_ID
    g.ok("label", "pod", "legacy", "-n", "shop", "istio.io/dataplane-mode=none", "--overwrite")
    wait_for(lambda: g.workloads().get("legacy", {}).get("protocol") == "TCP",
             "legacy out of the mesh (TCP)", up)  # fmt: skip
    assert g.status("legacy", f"{ORDERS}/api/health") == "200"  # plaintext, PERMISSIVE

    # -- section 4: STRICT, deny-all, allow web -> orders --------------------------------
    g.ok("apply", "-f", str(SECTION4))
    wait_for(lambda: g.status("legacy", f"{ORDERS}/api/health") == "000",
             "STRICT refusing the opted-out pod's plaintext", up)  # fmt: skip
    wait_for(lambda: g.status("probe", f"{ORDERS}/api/health") == "000",
             "deny-all refusing probe", up)  # fmt: skip
    assert g.status("deploy/web", f"{ORDERS}/api/health") == "200"
    assert g.status("probe", "http://web:8080/api/health") == "000"  # deny-all

    # -- section 5: the waypoint ---------------------------------------------------------
    g.ok("apply", "-f", str(ALLOW_WAYPOINT))
    done = up.ambient("waypoint", "apply", "-n", "shop", "--enroll-namespace", timeout=120)
    assert done.returncode == 0, done.stderr
    # Its pod runs `ambient`, here the test runner's interpreter under a 0700 /root.
    wait_for(
        lambda: up.get("get", "deployment", "waypoint", "-n", "shop"), "the waypoint Deployment", up
    )
    g.ok("patch", "deployment", "waypoint", "-n", "shop", "-p", PRIVILEGED_WAYPOINT)
    programmed = wait_for(
        lambda: g.ok("get", "gateways.gateway.networking.k8s.io", "waypoint", "-n", "shop",
                     "-o", 'jsonpath={.status.conditions[?(@.type=="Programmed")].status}')
        == "True",
        "the waypoint Programmed", up, timeout=120,
    )  # fmt: skip
    assert programmed
    assert g.ok("get", "namespace", "shop", "-o",
                "jsonpath={.metadata.labels.istio\\.io/use-waypoint}") == "waypoint"  # fmt: skip

    # -- sections 6 and 7: canary, x-canary, L7 policy, JWT ------------------------------
    g.ok("apply", "-f", str(L7))
    wait_for(lambda: g.status("probe", f"{ORDERS}/api/health") == "403",
             "the waypoint's L7 policy answering probe 403", up)  # fmt: skip
    denied = g.exec("probe", "curl", "-s", f"{ORDERS}/api/health").stdout
    assert denied == "RBAC: access denied"
    assert g.status("deploy/web", f"{ORDERS}/admin") == "403"  # only /api/* for web
    wait_for(lambda: {a["version"] for a in g.answers("deploy/web", f"{ORDERS}/api/orders", 10,
                                                       "x-canary: always")} == {"v2"},
             "x-canary: always routed to v2", up)  # fmt: skip
    answers = g.answers("deploy/web", f"{ORDERS}/api/orders", 400)
    versions = Counter(a["version"] for a in answers)
    assert 16 <= versions["v2"] <= 70, versions  # 10% of 400: 40 +- 4 standard deviations
    assert {a["peer_identity"] for a in answers} == {
        "spiffe://cluster.local/ns/shop/sa/waypoint"
    }  # orders is called by the waypoint, for web
    # the guide's `kubectl logs deploy/waypoint`: its node proxy's lines about it, read
    # through the node's kubelet socket; the 400 requests above are in its access lines
    logged = up.ambient("logs", "-n", "shop", "deploy/waypoint", "-c", "istio-proxy",
                        "--tail", "100")  # fmt: skip
    assert logged.returncode == 0, logged.stderr
    lines = logged.stdout.splitlines()
    assert lines and all("[shop/waypoint]" in line for line in lines), logged.stdout[-2000:]
    assert any("request complete" in line and 'path="/api/orders' in line for line in lines)
    # the guide's `istioctl dashboard kiali`: web -> waypoint -> orders from the waypoint's
    # metrics; with --netns its metrics port is in its pod's namespace, read through its node
    hops = g.dashboard_hops()
    for hop in (INTO_WAYPOINT, OUT_OF_WAYPOINT):
        assert hops[hop]["waypoint"] and hops[hop]["http"]["rps"] > 0, hops[hop]
        assert hops[hop]["mtls"] == "mutual_tls", hops[hop]

    g.apply(JWT_POLICIES)
    good = f"authorization: Bearer {_token()}"
    forged = f"authorization: Bearer {_token(OTHER_KEY)}"
    wait_for(lambda: g.status("probe", f"{ORDERS}/api/health", forged) == "401",
             "a forged token refused (401)", up)  # fmt: skip
    assert g.status("probe", f"{ORDERS}/api/health", good) == "200"
    assert g.status("probe", f"{ORDERS}/api/health") == "403"  # no token: no principal
    assert g.status("deploy/web", f"{ORDERS}/api/health") == "200"

    # -- scale: the new endpoint gets requests -------------------------------------------
    old = {p["metadata"]["name"] for p in g.pods("app=orders,version=v1")}
    g.ok("scale", "deploy/orders-v1", "-n", "shop", "--replicas=3")
    g.rollout("orders-v1")
    new = {p["metadata"]["name"] for p in g.pods("app=orders,version=v1")} - old
    assert len(new) == 1
    wait_for(lambda: new <= {a["pod"] for a in g.answers("deploy/web", f"{ORDERS}/api/orders",
                                                         60)},
             "the new orders-v1 pod answering", up)  # fmt: skip

    # -- delete a pod: its replacement takes over ----------------------------------------
    (v2,) = [p["metadata"]["name"] for p in g.pods("app=orders,version=v2")]
    g.ok("delete", "pod", v2, "-n", "shop", "--wait=false")
    g.rollout("orders-v2")

    def pinned() -> set[str]:
        return {a["pod"] for a in g.answers("deploy/web", f"{ORDERS}/api/orders", 5,
                                            "x-canary: always")}  # fmt: skip

    replacement = wait_for(lambda: (p := pinned()) and v2 not in p and p, "v2's replacement", up)
    assert len(replacement) == 1

    # -- kill -9 the control plane: traffic flows, it comes back and re-syncs ------------
    (pid,) = g.controlplane_pids()
    os.kill(pid, signal.SIGKILL)
    assert g.status("deploy/web", f"{ORDERS}/api/health") == "200"
    assert g.status("probe", f"{ORDERS}/api/health") == "403"
    g.ok("scale", "deploy/orders-v2", "-n", "shop", "--replicas=2")
    g.rollout("orders-v2")
    wait_for(lambda: (p := g.controlplane_pids()) and pid not in p, "the control plane again", up)
    wait_for(lambda: len(pinned() | pinned() | pinned()) == 2,
             "both orders-v2 pods answering (the ztunnels re-synced)", up)  # fmt: skip

    # -- analyze --------------------------------------------------------------------------
    analyzed = up.ambient("analyze", "-n", "shop")
    assert analyzed.returncode == 0, analyzed.stdout + analyzed.stderr
    assert "Error" not in analyzed.stdout, analyzed.stdout
