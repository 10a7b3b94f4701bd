"""kubectl's shapes on a running mesh (issue 17): get tables and YAML that applies back,
selectors, logs (a pod's, a waypoint's with its access lines, -f), scale, wait, and
analyze's namespace filter on the running mesh as on files.

Real ``ambient`` processes on examples/shop + the waypoint example, bound by label.
"""

from __future__ import annotations

import json
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.harness import AMBIENT, REPO, Mesh, clean_env, wait_for
from tests.e2e.test_waypoint import shop_with_waypoint

pytestmark = pytest.mark.slow

KINDS = ["pods", "deploy", "svc", "sa", "ns", "gateway", "vs", "dr", "ap"]

HEADERS = {
    "pods": "NAME READY STATUS RESTARTS AGE",
    "deploy": "NAME READY UP-TO-DATE AVAILABLE AGE",
    "svc": "NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE",
    "sa": "NAME AGE",
    "ns": "NAME STATUS AGE",
    "gateway": "NAME CLASS ADDRESS PROGRAMMED AGE",
    "vs": "NAME GATEWAYS HOSTS AGE",
    "dr": "NAME HOST AGE",
    "ap": "NAME ACTION AGE",
}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    yield from shop_with_waypoint(tmp_path_factory.mktemp("opscli"))


def rows(text: str) -> list[list[str]]:
    """Table lines split on kubectl's column gaps (two or more spaces)."""
    return [[c for c in line.split("  ") if c.strip()] for line in text.splitlines()]


@pytest.mark.parametrize("kind", KINDS)
def test_tables_have_kubectls_columns(mesh: Mesh, kind: str) -> None:
    out = mesh.ok("get", kind, "-n", "shop")
    header = out.splitlines()[0]
    assert header.split() == HEADERS[kind].split(), out
    # kubectl's tabwriter: each column but the last padded to its widest cell + 3
    first_width = max(len(line.split()[0]) for line in out.splitlines()) + 3
    assert header.index(header.split()[1]) == max(6, first_width), out


def test_table_cells(mesh: Mesh) -> None:
    pods = {r[0].strip(): r for r in rows(mesh.ok("get", "pods", "-n", "shop", "-o", "wide"))[1:]}
    web = next(name for name in pods if name.startswith("web-"))
    assert [c.strip() for c in pods[web][1:4]] == ["1/1", "Running", "0"]
    assert pods[web][5].strip().startswith("127.10.") and pods[web][6].strip() == "node-1"
    deploys = {
        r[0].strip(): [c.strip() for c in r] for r in rows(mesh.ok("get", "deploy", "-n", "shop"))
    }
    assert deploys["orders-v1"][1:4] == ["2/2", "2", "2"]
    gateway = [c.strip() for c in rows(mesh.ok("get", "gateway", "-n", "shop"))[1]]
    assert gateway[:2] == ["waypoint", "istio-waypoint"]
    assert gateway[2].startswith("127.20.") and gateway[3] == "True"
    svc = [c.strip() for c in rows(mesh.ok("get", "svc", "orders", "-n", "shop"))[1]]
    assert svc[1:5] == ["ClusterIP", svc[2], "<none>", "8080/TCP"] and svc[2].startswith("127.20.")
    vs = rows(mesh.ok("get", "vs", "-n", "shop"))[1]
    assert vs[1].strip() == '["orders.shop.svc.cluster.local"]'
    missing = mesh.run("get", "pod", "nope", "-n", "shop")
    assert (missing.returncode, missing.stderr.strip()) == (
        1,
        'Error from server (NotFound): pods "nope" not found',
    )
    none = mesh.run("get", "pods", "-n", "empty")
    assert (none.returncode, none.stdout, none.stderr.strip()) == (
        0,
        "",
        "No resources found in empty namespace.",
    )


def test_gateway_yaml_is_the_api_form(mesh: Mesh) -> None:
    out = mesh.ok("get", "gateway", "waypoint", "-n", "shop", "-o", "yaml")
    assert "gateway_class_name" not in out and "allowed_routes" not in out and "null" not in out
    gateway = yaml.safe_load(out)
    assert gateway["apiVersion"] == "gateway.networking.k8s.io/v1" and gateway["kind"] == "Gateway"
    assert gateway["spec"]["gatewayClassName"] == "istio-waypoint"
    assert gateway["metadata"]["creationTimestamp"].endswith("Z")
    conditions = {c["type"]: c["status"] for c in gateway["status"]["conditions"]}
    assert conditions["Programmed"] == "True"
    as_json = json.loads(mesh.ok("get", "gateway", "waypoint", "-n", "shop", "-o", "json"))
    assert as_json == gateway


@pytest.mark.parametrize("kind", KINDS)
def test_get_yaml_applies_back_unchanged(mesh: Mesh, kind: str) -> None:
    before = mesh.ok("get", kind, "-A", "-o", "yaml")
    assert yaml.safe_load(before)["items"], before
    applied = subprocess.run(
        [AMBIENT, "--state-dir", str(mesh.state_dir), "apply", "-f", "-"],
        input=before,
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_env(),
        cwd=REPO,
    )
    assert applied.returncode == 0, applied.stderr
    lines = applied.stdout.splitlines()
    assert lines and all(line.endswith(" unchanged") for line in lines), applied.stdout
    after = mesh.ok("get", kind, "-A", "-o", "yaml")
    if kind != "pods":  # a pod's status (restarts, times) moves on its own
        assert after == before


def test_label_selectors(mesh: Mesh) -> None:
    def names(selector: str) -> list[str]:
        out = mesh.ok(
            "get", "pods", "-n", "shop", "-l", selector, "-o", "jsonpath={.items[*].metadata.name}"
        )
        return sorted(n.rsplit("-", 2)[0] if n.count("-") >= 2 else n for n in out.split())

    assert names("app=orders,version=v2") == ["orders-v2", "orders-v2"]
    assert names("version in (v1, v2)") == ["orders-v1"] * 2 + ["orders-v2"] * 2 + ["web"]
    assert names("version notin (v1),app") == ["orders-v2", "orders-v2", "probe"]
    assert names("!version") == ["probe"]
    bad = mesh.run("get", "pods", "-l", "app in v1")
    assert bad.returncode == 1 and "bad selector" in bad.stderr


def test_logs_of_a_pod_and_of_the_waypoint(mesh: Mesh) -> None:
    out = mesh.ok("logs", "-n", "shop", "deploy/orders-v1", "--tail", "1")
    assert out.startswith("orders v1 listening on 127.10."), out
    result = mesh.run("logs", "-n", "shop", "deploy/orders-v1")
    assert result.stderr.startswith("Found 2 pods, using pod/orders-v1-")
    assert "ambient:" not in result.stdout  # the runtime's notes are not the container's output

    follower = subprocess.Popen(
        [AMBIENT, "--state-dir", str(mesh.state_dir), "logs", "-n", "shop", "deploy/waypoint", "-f", "--tail", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
        cwd=REPO,
    )  # fmt: skip
    try:
        # `logs -f` gives no sign that it has read to the end and started following (nor
        # does kubectl's), so a request made before then is rightly behind its --tail 0: ask
        # again until one shows up, at most 15 times.
        assert follower.stdout is not None
        for _ in range(15):
            mesh.curl("http://orders:8080/api/followed")
            ready, _, _ = select.select([follower.stdout], [], [], 2)
            if ready:
                break
        if not ready:
            follower.send_signal(signal.SIGINT)
            _, err = follower.communicate(timeout=10)
            logged = mesh.run("logs", "-n", "shop", "deploy/waypoint", "--since", "5m").stdout
            raise AssertionError(
                "no line followed within 15 requests (30s); the follower said "
                f"{err[-2000:]!r}; lines with /api/followed in the waypoint's log: "
                f"{[x for x in logged.splitlines() if '/api/followed' in x][-3:]}"
            )
        line = follower.stdout.readline()
        assert (
            "[shop/waypoint]" in line
            and "request complete" in line
            and 'path="/api/followed"' in line
        )
    finally:
        if follower.poll() is None:
            follower.send_signal(signal.SIGINT)
        code: int | None
        try:
            code = follower.wait(20)
        except subprocess.TimeoutExpired:
            follower.kill()
            follower.wait()
            code = None
        for pipe in (follower.stdout, follower.stderr):
            if pipe is not None:
                pipe.close()
    assert code == 0, "ambient logs -f did not end on SIGINT with status 0"
    history = mesh.ok("logs", "-n", "shop", "deploy/waypoint", "--since", "5m")
    assert 'path="/api/followed"' in history
    assert all("[shop/waypoint]" in line for line in history.splitlines())
    assert "INFO  ambient.access [shop/waypoint]  request complete" in history


def test_the_mesh_own_pods_are_istio_systems(mesh: Mesh) -> None:
    """``kubectl get pods -n istio-system -o wide``, ``logs -l app=ztunnel`` and ``wait``
    of the seed guides, on the mesh's own processes."""
    table = rows(mesh.ok("get", "pods", "-n", "istio-system", "-o", "wide"))
    cells = {r[0].strip(): [c.strip() for c in r] for r in table[1:]}
    ztunnels = sorted(n for n in cells if n.startswith("ztunnel-"))
    assert sorted(cells) == ["controlplane", *ztunnels] and len(ztunnels) >= 2, cells
    for name in ztunnels:
        node = name.removeprefix("ztunnel-")
        assert cells[name][1:3] == ["1/1", "Running"] and cells[name][6] == node, cells[name]
    assert cells["controlplane"][1:3] == ["1/1", "Running"]
    out = mesh.ok("logs", "-n", "istio-system", "-l", "app=ztunnel", "--prefix", "--tail", "-1")
    prefixes = {line.split("] ")[0] + "]" for line in out.splitlines()}
    assert prefixes == {f"[pod/{n}/{n}]" for n in ztunnels}, out[-2000:]
    # the runtime's notes (--- TIME ambient: ... ---) are not the process's output
    assert not any(line.split("] ", 1)[-1].startswith("--- ") for line in out.splitlines())
    ten = mesh.ok("logs", "-n", "istio-system", "-l", "app=istiod").splitlines()
    assert 0 < len(ten) <= 10
    nodes = {r[0].strip(): r[1].strip() for r in rows(mesh.ok("get", "nodes"))[1:]}
    assert nodes == {n.removeprefix("ztunnel-"): "Ready" for n in ztunnels}, nodes
    ds = rows(mesh.ok("get", "daemonset", "ztunnel", "-n", "istio-system"))
    count = str(len(ztunnels))
    assert [c.strip() for c in ds[1][:6]] == ["ztunnel", count, count, count, count, count]
    waited = mesh.ok(
        "wait", "--for=condition=Ready", "pod", "-l", "app=ztunnel", "-n", "istio-system"
    )
    assert sorted(waited.splitlines()) == [f"pod/{n} condition met" for n in ztunnels]


def test_scale_and_wait(mesh: Mesh) -> None:
    assert mesh.ok("scale", "deploy/web", "--replicas", "2", "-n", "shop").strip() == (
        "deployment.apps/web scaled"
    )
    try:
        out = mesh.ok(
            "wait",
            "--for=condition=Available",
            "deploy/web",
            "-n",
            "shop",
            "--timeout",
            "60s",
            timeout=70,
        )
        assert out.strip() == "deployment.apps/web condition met"
        row = rows(mesh.ok("get", "deploy", "web", "-n", "shop"))[1]
        assert [c.strip() for c in row[1:4]] == ["2/2", "2", "2"]
        pods = [p["name"] for p in mesh.pods("shop") if p["workload"] == "web"]
        assert len(pods) == 2
        out = mesh.ok("wait", "--for=condition=Ready", *(f"pod/{p}" for p in pods), "-n", "shop")
        assert sorted(out.splitlines()) == sorted(f"pod/{p} condition met" for p in pods)
    finally:
        mesh.ok("scale", "deploy/web", "--replicas", "1", "-n", "shop")
    wait_for(
        "web back to one pod",
        lambda: len([p for p in mesh.pods("shop") if p["workload"] == "web"]) == 1,
        timeout=30,
    )
    out = mesh.ok("wait", "--for=condition=Programmed", "gateway/waypoint", "-n", "shop")
    assert out.strip() == "gateway.gateway.networking.k8s.io/waypoint condition met"
    started = time.monotonic()
    timed_out = mesh.run(
        "wait",
        "--for=condition=Programmed=False",
        "gateway/waypoint",
        "-n",
        "shop",
        "--timeout",
        "1s",
    )
    assert (timed_out.returncode, timed_out.stderr.strip()) == (
        1,
        "error: timed out waiting for the condition on gateways/waypoint",
    )
    assert time.monotonic() - started >= 1
    missing = mesh.run("wait", "--for=condition=Ready", "pod/nope", "-n", "shop")
    assert (missing.returncode, missing.stderr.strip()) == (
        1,
        'Error from server (NotFound): pods "nope" not found',
    )


FAULTY = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: faulty, namespace: shop}
spec:
  hosts: [web]
  http:
  - route: [{destination: {host: web}}]
    fault: {abort: {httpStatus: 503, percentage: {value: 10}}}
    retries: {attempts: 2}
---
apiVersion: v1
kind: Namespace
metadata: {name: other}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: lost, namespace: other}
spec:
  selector: {matchLabels: {app: nobody}}
"""


def codes(out: str) -> list[str]:
    return sorted(f"{m['code']} {m['origin']}" for m in json.loads(out))


def test_analyze_namespace_filters_on_the_running_mesh_as_on_files(
    mesh: Mesh, tmp_path: Path
) -> None:
    manifest = tmp_path / "faulty.yaml"
    manifest.write_text(FAULTY)
    mesh.ok("apply", "-f", str(manifest))
    folder = tmp_path / "folder"
    shutil.copytree(mesh.config_dir, folder)
    shutil.copy(manifest, folder / "faulty.yaml")
    shop = folder / "shop.yaml"  # the live label (shop_with_waypoint) in the files too
    shop.write_text(
        shop.read_text().replace(
            "    istio.io/dataplane-mode: ambient\n",
            "    istio.io/dataplane-mode: ambient\n    istio.io/use-waypoint: waypoint\n",
            1,
        )
    )
    try:
        for args in (("-n", "shop"), ("-n", "other"), ("-A",)):
            live = mesh.run("analyze", *args, "-o", "json")
            offline = mesh.run("analyze", str(folder), *args, "-o", "json")
            assert live.returncode == offline.returncode, (live.stderr, offline.stderr)
            assert codes(live.stdout) == codes(offline.stdout), args
        found = codes(mesh.run("analyze", "-n", "shop", "-o", "json").stdout)
        assert "AMB0006 VirtualService faulty.shop" in found
        assert not any("other" in c for c in found)
        other = codes(mesh.run("analyze", "-n", "other", "-o", "json").stdout)
        assert other == ["IST0127 AuthorizationPolicy lost.other"]
    finally:
        mesh.ok("delete", "-f", str(manifest))
