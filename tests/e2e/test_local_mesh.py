"""The L4 mesh on one host, end to end: the real ``ambient`` CLI, real processes, curl.

Order matters only because one mesh can run at a time: first the tests that
need no mesh (bad manifests, ``status`` with nothing running), then the shop
example shared by ``TestShop`` (its fixture stops the mesh when the class
ends), then a mesh of its own for ``up`` twice and Ctrl-C.
"""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import (
    AMBIENT,
    REPO,
    SHOP,
    Mesh,
    PodState,
    ambient,
    clean_env,
    mesh_listeners,
    parse_answers,
    pid_alive,
    scrape,
    select,
    wait_for,
)

pytestmark = pytest.mark.slow

WEB = "spiffe://cluster.local/ns/shop/sa/web"
ORDERS = "spiffe://cluster.local/ns/shop/sa/orders"
NODES = ("127.1.0.1", "127.1.0.2")


# -- bad manifests: a clear error, and nothing starts ----------------------------------------

BASE = """\
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: orders, namespace: shop}
---
apiVersion: v1
kind: Service
metadata: {name: orders, namespace: shop}
spec:
  selector: {app: orders}
  ports: [{name: http, port: 8080, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: orders, namespace: shop}
spec:
  replicas: 1
  selector: {matchLabels: {app: orders}}
  template:
    metadata: {labels: {app: orders}}
    spec:
      serviceAccountName: orders
      containers:
      - name: orders
        command: [python3, -c, "import signal; signal.pause()"]
        ports: [{containerPort: 8080}]
"""

POD = """\
---
apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: shop}
spec:
  containers: [{name: c, command: [sleep, "1000"]}]
status: {podIP: %s}
"""


def edit(old: str, new: str, text: str = BASE) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def bad(
    case: str,
    files: dict[str, str],
    location: str,
    where: str,
    problem: str,
    xfail: str | None = None,
) -> Any:
    """A broken config folder and the one error line expected: ``location: where: ...problem``."""
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(files, location, where, problem, id=case, marks=marks)


BAD = [
    bad(
        "unknown-kind",
        {"app.yaml": BASE + "---\napiVersion: v1\nkind: Frobnicator\nmetadata: {name: x}\n"},
        "app.yaml:5",
        "Frobnicator/x: kind",
        "unknown kind 'Frobnicator'",
    ),
    bad(
        "unknown-field",
        {"app.yaml": edit("  replicas: 1\n", "  replicas: 1\n  replica: 2\n")},
        "app.yaml:4",
        "Deployment/orders: spec.replica",
        "unknown field",
    ),
    bad(
        "wrong-type",
        {"app.yaml": edit("replicas: 1", "replicas: two")},
        "app.yaml:4",
        "Deployment/orders: spec.replicas",
        "expected an integer",
    ),
    bad(
        "negative-replicas",
        {"app.yaml": edit("replicas: 1", "replicas: -1")},
        "app.yaml:4",
        "Deployment/orders: spec.replicas",
        "got -1",
    ),
    bad(
        "bad-name",
        {
            "app.yaml": edit(
                "kind: Service\nmetadata: {name: orders",
                "kind: Service\nmetadata: {name: Orders_V1",
            )
        },
        "app.yaml:3",
        "Service/Orders_V1: metadata.name",
        "invalid name 'Orders_V1'",
    ),
    bad(
        "bad-label-value",
        {
            "app.yaml": edit(
                "metadata: {labels: {app: orders}}", "metadata: {labels: {app: 'orders!'}}"
            )
        },
        "app.yaml:4",
        "Deployment/orders: spec.template.metadata.labels[app]",
        "invalid label value",
    ),
    bad(
        "bad-service-port",
        {"app.yaml": edit("port: 8080, targetPort", "port: 70000, targetPort")},
        "app.yaml:3",
        "Service/orders: spec.ports[0].port",
        "70000",
    ),
    bad(
        "bad-container-port",
        {"app.yaml": edit("containerPort: 8080", "containerPort: 0")},
        "app.yaml:4",
        "Deployment/orders: spec.template.spec.containers[0].ports[0].containerPort",
        "got 0",
    ),
    bad(
        "duplicate-object",
        {
            "a.yaml": BASE,
            "b.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: orders, namespace: shop}\n"
            "spec: {ports: [{port: 80}]}\n",
        },
        "b.yaml:1",
        "Service/orders: metadata.name",
        "a.yaml:3",
    ),
    bad(
        "yaml-syntax",
        {"app.yaml": edit("selector: {app: orders}", "selector: {app: orders")},
        "app.yaml:14:8",
        "",
        "invalid YAML",
    ),
    bad(
        "not-a-mapping",
        {"app.yaml": BASE + "---\n- just\n- a list\n"},
        "app.yaml:5",
        "",
        "expected a mapping",
    ),
    bad(
        "missing-name",
        {
            "app.yaml": BASE
            + "---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {namespace: shop}\n"
        },
        "app.yaml:5",
        "ServiceAccount: metadata.name",
        "missing required field",
    ),
    bad(
        "wrong-api-version",
        {"app.yaml": edit("apiVersion: apps/v1", "apiVersion: v1")},
        "app.yaml:4",
        "Deployment/orders: apiVersion",
        "apps/v1",
    ),
    bad(
        "undeclared-service-account",
        {"app.yaml": edit("serviceAccountName: orders", "serviceAccountName: ghost")},
        "app.yaml:4",
        "Deployment/orders: spec.template.spec.serviceAccountName",
        "shop/ghost is not declared",
    ),
    bad(
        "selector-mismatch",
        {"app.yaml": edit("matchLabels: {app: orders}", "matchLabels: {app: other}")},
        "app.yaml:4",
        "Deployment/orders: spec.template.metadata.labels",
        "do not match spec.selector",
    ),
    bad(
        "bad-pod-ip",
        {"app.yaml": BASE + POD % ("p", "300.1.2.3")},
        "app.yaml:5",
        "Pod/p: status.podIP",
        "invalid IP address '300.1.2.3'",
    ),
    bad(
        "pod-ip-taken",
        {"app.yaml": BASE + POD % ("p", "127.10.9.9") + POD % ("q", "127.10.9.9")},
        "app.yaml:6",
        "Pod/q: status.podIP",
        "already used by",
    ),
    bad(
        "bad-cluster-ip",
        {
            "app.yaml": edit(
                "  selector: {app: orders}", "  clusterIP: 10.0.0.999\n  selector: {app: orders}"
            )
        },
        "app.yaml:3",
        "Service/orders: spec.clusterIP",
        "invalid IP address '10.0.0.999'",
    ),
    bad(
        "no-command",
        {"app.yaml": edit('        command: [python3, -c, "import signal; signal.pause()"]\n', "")},
        "app.yaml:4",
        "Deployment/orders: spec.template.spec.containers[0].command",
        "command",
    ),
]


@pytest.mark.usefixtures("no_other_mesh")
@pytest.mark.parametrize(("files", "location", "where", "problem"), BAD)
def test_bad_manifest_is_refused_and_nothing_starts(
    tmp_path: Path, files: dict[str, str], location: str, where: str, problem: str
) -> None:
    config, state = tmp_path / "config", tmp_path / "state"
    config.mkdir()
    for name, text in files.items():
        (config / name).write_text(text)
    listeners_before = set(mesh_listeners())

    started = time.monotonic()
    result = ambient("up", str(config), state_dir=state, timeout=30)
    took = time.monotonic() - started

    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert took < 10, f"took {took:.1f}s to refuse"
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, output
    expected = f"error: {config}/{location}: " + (f"{where}: " if where else "")
    assert errors[0].startswith(expected), f"{errors[0]!r} does not start with {expected!r}"
    assert problem in errors[0].removeprefix(expected), errors[0]
    # Only the verdict: no component logged anything, so nothing ran.
    others = [
        line
        for line in output.splitlines()
        if line.strip() and not line.startswith(("error: ", "warning: ", "nothing was started"))
    ]
    assert others == [], output
    assert not (state / "mesh.json").exists()
    assert set(mesh_listeners()) <= listeners_before


# -- no mesh running --------------------------------------------------------------------------


def test_commands_without_a_mesh_fail_clearly(tmp_path: Path) -> None:
    state = tmp_path / "state"
    for args in (("status",), ("ztunnel-config", "workloads"), ("get", "pods")):
        result = ambient(*args, state_dir=state)
        assert result.returncode == 1, result
        assert result.stderr.strip() == (
            f"error: no mesh is running for state folder {state} "
            "(start one with `ambient up DIR`, or pass --state-dir / set AMBIENT_STATE_DIR)"
        ), result.stderr

    started = time.monotonic()
    result = ambient("status", "--wait", "1", state_dir=state)
    assert result.returncode == 1
    assert "no mesh is running" in result.stderr
    assert 1 <= time.monotonic() - started < 8

    # A mesh.json left by a killed `ambient up`: the dead pid is noticed.
    state.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (state / "mesh.json").write_text(json.dumps({"pid": dead.pid, "socket": "/nonexistent"}))
    result = ambient("status", state_dir=state)
    assert result.returncode == 1
    assert f"(pid {dead.pid}) is not running" in result.stderr, result.stderr


# -- the shop example ---------------------------------------------------------------------------


def orders_pods(mesh: Mesh) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = mesh.pods("shop")
    return sorted((p for p in pods if p["name"].startswith("orders-")), key=lambda p: p["name"])


def protocols(mesh: Mesh) -> dict[str, str]:
    return {name: w["protocol"] for name, w in mesh.workloads().items()}


def pids(mesh: Mesh) -> dict[str, int | None]:
    return {name: pod.pid for name, pod in mesh.pod_states().items()}


@pytest.fixture(scope="class")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """`ambient up examples/shop`, shared by one class's tests and stopped when it ends."""
    root = tmp_path_factory.mktemp("shop")
    mesh = Mesh(SHOP, root / "state", root / "up.log").start()
    try:
        yield mesh
    finally:
        mesh.stop()


class TestShop:
    def test_ztunnel_config_lists_every_pod_with_hbone(self, mesh: Mesh) -> None:
        table = mesh.ok("ztunnel-config", "workloads", "--workload-namespace", "shop")
        header, *rows = [line.split() for line in table.strip().splitlines()]
        assert header == ["NAMESPACE", "POD", "NAME", "ADDRESS", "NODE", "WAYPOINT", "PROTOCOL"]
        names = sorted(row[1] for row in rows)
        assert len(names) == 6, table
        assert [re.sub(r"-[a-z0-9]+-[a-z0-9]+$", "", n) for n in names] == [
            "orders-v1",
            "orders-v1",
            "orders-v2",
            "orders-v2",
            "probe",
            "web",
        ], names
        assert {row[0] for row in rows} == {"shop"}
        assert {row[-1] for row in rows} == {"HBONE"}, table

        workloads = mesh.workloads()  # `zc ... -o json`
        assert sorted(workloads) == names
        pods = {p["name"]: p for p in mesh.pods("shop")}
        for name, w in workloads.items():
            assert w["protocol"] == "HBONE"
            assert w["workloadIps"] == [pods[name]["ip"]]
            assert w["node"] == pods[name]["node"]
            assert w["status"] == "Healthy"
            assert w["serviceAccount"] == name.split("-")[0]
        assert {w["node"] for n, w in workloads.items() if n.startswith("orders-")} == {
            "node-1",
            "node-2",
        }

    @pytest.mark.parametrize("host", ["orders", "orders.shop", "orders.shop.svc.cluster.local"])
    def test_web_calls_orders_over_hbone(self, mesh: Mesh, host: str) -> None:
        web = next(p for p in mesh.pods("shop") if p["workload"] == "web")
        answer = mesh.curl(f"http://{host}:8080/hello?x=1")
        assert answer["app"] == "orders"
        assert answer["path"] == "/hello?x=1"
        assert answer["peer_identity"] == WEB
        assert answer["peer"].rpartition(":")[0] == web["ip"]

    def test_metrics_and_access_log(self, mesh: Mesh) -> None:
        answers, failures = mesh.curl_many("http://orders:8080/metrics-test", 12)
        assert not failures and len(answers) == 12
        for node in NODES:
            samples = select(
                scrape(f"http://{node}:15020/metrics"),
                "istio_tcp_connections_opened_total",
                reporter="destination",
                source_principal=WEB,
                destination_principal=ORDERS,
                connection_security_policy="mutual_tls",
            )
            assert samples, f"no destination-reported mTLS connections from web on {node}"
            assert sum(s.value for s in samples) >= 1
            assert {s.labels["source_workload"] for s in samples} == {"web"}
            assert {s.labels["destination_service"] for s in samples} == {
                "orders.shop.svc.cluster.local"
            }
        pattern = re.compile(
            r" ambient\.access +connection complete .*"
            rf'src\.identity="{WEB}" .*dst\.identity="{ORDERS}" .*direction="(inbound|outbound)"'
        )

        def directions() -> set[str] | None:
            seen = {m.group(1) for m in map(pattern.search, mesh.log().splitlines()) if m}
            return seen if seen == {"inbound", "outbound"} else None

        wait_for("access log lines for web -> orders", directions, timeout=10)

    def test_load_balancing_over_four_pods(self, mesh: Mesh) -> None:
        answers, failures = mesh.curl_many("http://orders:8080/lb", 100)
        assert failures == []
        assert len(answers) == 100
        assert {a["peer_identity"] for a in answers} == {WEB}
        spread = collections.Counter(a["pod"] for a in answers)
        assert sorted(spread) == [p["name"] for p in orders_pods(mesh)]
        assert all(15 <= n <= 35 for n in spread.values()), spread

    def test_namespace_leaves_and_rejoins_without_restarts(self, mesh: Mesh) -> None:
        before = pids(mesh)
        assert len(before) == 6 and all(before.values())
        try:
            mesh.ok("label", "namespace", "shop", "istio.io/dataplane-mode-")
            wait_for("every pod on TCP", lambda: set(protocols(mesh).values()) == {"TCP"})
            answers, failures = mesh.curl_many("http://orders:8080/out", 8)
            assert failures == []
            assert len(answers) == 8
            assert {a["peer_identity"] for a in answers} == {None}  # plain TCP: no identity
            assert pids(mesh) == before
        finally:
            mesh.ok("label", "namespace", "shop", "istio.io/dataplane-mode=ambient")
        wait_for("every pod on HBONE", lambda: set(protocols(mesh).values()) == {"HBONE"})
        answers, failures = mesh.curl_many("http://orders:8080/in", 8)
        assert failures == []
        assert {a["peer_identity"] for a in answers} == {WEB}
        assert len({a["pod"] for a in answers}) > 1
        assert pids(mesh) == before
        assert {p.restarts for p in mesh.pod_states().values()} == {0}

    def test_one_pod_opts_out(self, mesh: Mesh) -> None:
        before = pids(mesh)
        out, other = orders_pods(mesh)[:2]
        try:
            mesh.ok("label", "pod", out["name"], "istio.io/dataplane-mode=none", "-n", "shop")
            wait_for("the opted-out pod on TCP", lambda: protocols(mesh)[out["name"]] == "TCP")
            assert {p for n, p in protocols(mesh).items() if n != out["name"]} == {"HBONE"}

            direct = mesh.curl(f"http://{out['ip']}:8080/direct")
            assert (direct["pod"], direct["peer_identity"]) == (out["name"], None)
            direct = mesh.curl(f"http://{other['ip']}:8080/direct")
            assert (direct["pod"], direct["peer_identity"]) == (other["name"], WEB)

            answers, failures = mesh.curl_many("http://orders:8080/mixed", 16)
            assert failures == []
            assert len(answers) == 16
            for answer in answers:
                expected = None if answer["pod"] == out["name"] else WEB
                assert answer["peer_identity"] == expected, answer
            assert pids(mesh) == before
        finally:
            mesh.ok("label", "pod", out["name"], "istio.io/dataplane-mode-", "-n", "shop")
        wait_for("the pod back on HBONE", lambda: protocols(mesh)[out["name"]] == "HBONE")
        assert mesh.curl(f"http://{out['ip']}:8080/back")["peer_identity"] == WEB
        assert pids(mesh) == before

    def test_killed_pod_is_restarted(self, mesh: Mesh) -> None:
        victim = orders_pods(mesh)[0]
        key = f"shop/{victim['name']}"
        before = mesh.pod_states()
        old = before[key].pid
        assert old is not None and before[key].restarts == 0

        def new_run() -> PodState | None:
            pod = mesh.pod_states()[key]
            return pod if pod.ready and pod.pid not in (None, old) else None

        os.kill(old, signal.SIGKILL)
        restarted = wait_for(f"{key} restarted", new_run, timeout=20, every=0.2)
        assert restarted.restarts == 1
        assert not pid_alive(old)
        after = mesh.pod_states()
        for name, pod in before.items():
            if name != key:
                assert (after[name].pid, after[name].restarts) == (pod.pid, pod.restarts)
        answer = mesh.curl(f"http://{victim['ip']}:8080/again")
        assert (answer["pod"], answer["peer_identity"]) == (victim["name"], WEB)
        assert mesh.workloads()[victim["name"]]["protocol"] == "HBONE"

    def test_no_failed_connections_while_a_pod_restarts(self, mesh: Mesh) -> None:
        victim = orders_pods(mesh)[1]
        key = f"shop/{victim['name']}"
        old = mesh.pod_states()[key].pid
        assert old is not None
        client = Client(mesh, "http://orders:8080/during", 600)
        try:
            wait_for("traffic flowing", lambda: len(client.lines) >= 8, timeout=20)
            killed_at = len(client.lines)
            os.kill(old, signal.SIGKILL)
            wait_for(
                f"{key} restarted",
                lambda: (s := mesh.pod_states()[key]).ready and s.pid not in (None, old),
                timeout=20,
                every=0.2,
            )
            restarted_at = len(client.lines)
            wait_for("traffic after the restart", lambda: len(client.lines) >= restarted_at + 12)
        finally:
            client.stop()
        answers, failures = parse_answers("\n".join(client.lines))
        assert restarted_at > killed_at + 4, "too few calls while the pod was down to tell"
        # SIGKILL loses the one request the app may be serving at that instant; no mesh can
        # save it (curl makes one call at a time). It shows in the access log as an inbound
        # connection to the victim that delivered the request and got nothing back (the
        # kernel closed the dead app's socket with a reset, or a FIN if it had read it all).
        # Every other call, made before its unreadiness reached the clients or after, must
        # succeed: none may be routed to the dead pod.
        in_flight = [
            line
            for line in access_lines(mesh)
            if 'direction="inbound"' in line
            and f'dst.workload="{victim["name"]}"' in line
            and " bytes_sent=0 " in line
            and " bytes_recv=0 " not in line
        ]
        assert len(failures) <= min(1, len(in_flight)), (
            f"{len(failures)} of {len(client.lines)} calls failed "
            f"({restarted_at - killed_at} made between the kill and the restart; "
            f"{len(in_flight)} in flight at the kill): "
            f"{failures[:3]}; access log: {access_errors(mesh)[:2]}"
        )
        assert victim["name"] in {a["pod"] for a in answers[restarted_at:]}


def access_lines(mesh: Mesh) -> list[str]:
    return [line for line in mesh.log().splitlines() if "ambient.access" in line]


def access_errors(mesh: Mesh) -> list[str]:
    return [
        line for line in mesh.log().splitlines() if "ambient.access" in line and "error=" in line
    ]


class Client:
    """curl in a bounded shell loop in the web pod, printing one line per call, read as it runs."""

    def __init__(self, mesh: Mesh, url: str, count: int) -> None:
        script = f'for i in $(seq {count}); do curl -sS -m 5 "$0" || echo "FAIL exit=$?"; done'
        self.process = subprocess.Popen(
            [
                AMBIENT,
                "--state-dir",
                str(mesh.state_dir),
                "exec",
                "-n",
                "shop",
                "deploy/web",
                "--",
                "sh",
                "-c",
                script,
                url,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=clean_env(),
            cwd=REPO,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.strip():
                self.lines.append(line.strip())

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self.reader.join(10)
        assert self.process.stdout is not None
        self.process.stdout.close()


# -- a mesh of its own: `up` twice, and Ctrl-C ------------------------------------------------------


def can_bind(ip: str, port: int) -> bool:
    """True if nothing listens on ip:port (SO_REUSEADDR: TIME_WAIT leftovers do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, port))
        except OSError:
            return False
    return True


def test_up_twice_is_refused_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    state = tmp_path / "state"
    mesh = Mesh(SHOP, state, tmp_path / "up.log").start()
    try:
        info = json.loads((state / "mesh.json").read_text())
        assert info["pid"] == mesh.pid
        before = mesh.pod_states()
        app_pids = [p.pid for p in before.values()]
        assert len(app_pids) == 6 and all(app_pids)
        pods = mesh.pods("shop")

        started = time.monotonic()
        second = ambient("up", str(SHOP), state_dir=state, timeout=30)
        assert second.returncode == 1, second
        assert time.monotonic() - started < 10
        assert f"a mesh is already running for {state} (pid {mesh.pid})" in second.stderr
        # The first one did not notice.
        assert mesh.run("status", "--wait", "5").returncode == 0
        assert json.loads((state / "mesh.json").read_text())["pid"] == mesh.pid
        assert mesh.pod_states() == before

        code = mesh.stop()
    finally:
        mesh.stop()
    assert code == 0, mesh.log()[-2000:]
    alive = [pid for pid in app_pids if pid is not None and pid_alive(pid)]
    assert alive == [], f"app processes left running: {alive}"
    assert mesh_listeners() == []
    for pod in pods:
        for port in (8080, 15008, 15080):
            assert can_bind(pod["ip"], port), f"{pod['ip']}:{port} still bound"
    for node in NODES:
        for port in (15000, 15020, 15021):
            assert can_bind(node, port), f"{node}:{port} still bound"
    assert not (state / "mesh.json").exists()
    assert not (state / "control.sock").exists()
    result = ambient("status", state_dir=state)
    assert result.returncode == 1 and "no mesh is running" in result.stderr
