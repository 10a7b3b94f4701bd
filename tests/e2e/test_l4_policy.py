"""L4 policy end to end: AuthorizationPolicy and PeerAuthentication on the shop, with curl.

The real ``ambient`` CLI and real processes, as in ``test_local_mesh``: only
one mesh runs at a time. First the refusals of ``ambient up`` (nothing
starts), then ``TestPolicies`` on one shop mesh (each test removes what it
applied, and starts by checking the ztunnels hold no policy), then a mesh of
its own whose folder carries a policy with HTTP fields.

A refused connection is curl exit 56 (reset after the HBONE CONNECT got 401)
or 52 (the plaintext path closes the client before curl reads anything).
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import (
    AMBIENT,
    REPO,
    SHOP,
    Mesh,
    clean_env,
    mesh_listeners,
    parse_answers,
    scrape,
    select,
    wait_for,
    wait_mesh_addresses_free,
)

pytestmark = pytest.mark.slow

WEB = "spiffe://cluster.local/ns/shop/sa/web"
PROBE = "spiffe://cluster.local/ns/shop/sa/probe"
NODES = ("127.1.0.1", "127.1.0.2")
SECTION4 = REPO / "examples" / "policies" / "section4-strict-deny-all.yaml"
SECTION4_POLICIES = {"shop/deny-all", "shop/orders-allow-web"}
MESH_WIDE_STRICT = {"istio-system/default"}
REFUSED = (52, 56)
PUSH_DEADLINE = 5.0
"""Bound on the asynchronous push of an applied policy to both ztunnels (it takes ms)."""

DENY_PROBE = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-probe, namespace: shop}
spec:
  action: DENY
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/shop/sa/probe]
"""

DRY_RUN_DENY_WEB = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: dry-deny-web
  namespace: shop
  annotations: {istio.io/dry-run: "true"}
spec:
  selector:
    matchLabels: {app: orders}
  action: DENY
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/shop/sa/web]
"""

GET_ONLY = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: orders-get-only, namespace: shop}
spec:
  selector:
    matchLabels: {app: orders}
  action: ALLOW
  rules:
  - to:
    - operation:
        methods: [GET]
"""
GET_ONLY_WARNING = re.compile(
    r"WARNING ambient\.up +AuthorizationPolicy shop/orders-get-only: spec\.rules\[0\] omitted "
    r"from ALLOW policy: ztunnel cannot enforce spec\.rules\[0\]\.to\[0\]\.operation\.methods; "
    r"the rule can never allow \(enforce it at a waypoint via targetRefs\)"
)


def strict(namespace: str) -> str:
    return (
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
        f"metadata: {{name: default, namespace: {namespace}}}\n"
        "spec:\n  mtls: {mode: STRICT}\n"
    )


# -- bad policies ---------------------------------------------------------------------------

# Document 1 is valid and would deny web; document 2 is section 4's orders-allow-web with
# one mistake. Neither may be applied: web -> orders keeps working under section 4.
DENY_WEB = DENY_PROBE.replace("deny-probe", "deny-web").replace("sa/probe", "sa/web")
ORDERS_ALLOW_WEB = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: orders-allow-web
  namespace: shop
spec:
  selector:
    matchLabels: {app: orders}
  action: ALLOW
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/shop/sa/web]
"""


def edit(old: str, new: str, text: str = ORDERS_ALLOW_WEB) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def bad(case: str, document: str, where: str, problem: str) -> Any:
    """A bad second document and its one error line: ``file:2: where: ...problem...``."""
    marks: list[Any] = []
    return pytest.param(DENY_WEB + "---\n" + document, where, problem, id=case, marks=marks)


WHERE = "AuthorizationPolicy/orders-allow-web: "
BAD = [
    bad(
        "wrong-type",
        edit(ORDERS_ALLOW_WEB[ORDERS_ALLOW_WEB.index("  rules:") :], '  rules: "x"\n'),
        WHERE + "spec.rules",
        "expected a list, got string",
    ),
    bad(
        "unknown-field",
        edit("principals: [", "principal: ["),
        WHERE + "spec.rules[0].from[0].source.principal",
        "unknown field 'principal'",
    ),
    bad(
        "invalid-cidr",
        edit("sa/web]\n", "sa/web]\n        ipBlocks: [10.0.0.0/33]\n"),
        WHERE + "spec.rules[0].from[0].source.ipBlocks[0]",
        "invalid IP address or CIDR '10.0.0.0/33'",
    ),
    bad(
        "invalid-principal",
        edit("[cluster.local/ns/shop/sa/web]", '["spiffe://cluster.local/ns/shop/sa/web"]'),
        WHERE + "spec.rules[0].from[0].source.principals[0]",
        "invalid principal 'spiffe://cluster.local/ns/shop/sa/web'",
    ),
    bad(
        "invalid-action",
        edit("action: ALLOW", "action: ALLOWED"),
        WHERE + "spec.action",
        "invalid action 'ALLOWED'",
    ),
    bad(
        "port-0",
        edit("sa/web]\n", 'sa/web]\n    to:\n    - operation:\n        ports: ["0"]\n'),
        WHERE + "spec.rules[0].to[0].operation.ports[0]",
        "invalid port '0'",
    ),
    bad(
        "selector-and-targetRefs",
        edit(
            "  action: ALLOW",
            '  targetRefs: [{kind: Service, group: "", name: orders}]\n  action: ALLOW',
        ),
        WHERE + "spec.selector",
        "only one of selector or targetRefs can be set",
    ),
    bad(
        "peerauthentication-mode",
        strict("istio-system").replace("STRICT", "STRICTER"),
        "PeerAuthentication/default: spec.mtls.mode",
        "invalid mode 'STRICTER'",
    ),
    bad(
        "dry-run-annotation",
        edit(
            "  namespace: shop\n", '  namespace: shop\n  annotations: {istio.io/dry-run: "yes"}\n'
        ),
        WHERE + "metadata.annotations[istio.io/dry-run]",
        "'yes'",
    ),
]


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error: ")]


def assert_one_error(output: str, path: Path, where: str, problem: str) -> None:
    errors = error_lines(output)
    assert len(errors) == 1, output
    expected = f"error: {path}:2: {where}: "
    assert errors[0].startswith(expected), f"{errors[0]!r} does not start with {expected!r}"
    assert problem in errors[0].removeprefix(expected), errors[0]


def shop_folder(root: Path, policies: str) -> Path:
    """A copy of examples/shop with ``policies.yaml`` beside it."""
    config = root / "config"
    config.mkdir()
    for item in SHOP.iterdir():
        if item.is_file():
            shutil.copy(item, config / item.name)
    (config / "policies.yaml").write_text(policies)
    return config


def up_expecting_refusal(config: Path, state: Path) -> tuple[int, str, float]:
    """``ambient up CONFIG``; if it starts instead of refusing, stop it (Ctrl-C) and fail."""
    wait_mesh_addresses_free()  # in case it does start: one mesh at a time
    log_path = config.parent / "up.log"
    started = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [AMBIENT, "up", str(config), "--state-dir", str(state)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=clean_env(),
            cwd=REPO,
            start_new_session=True,
        )
        while process.poll() is None and time.monotonic() - started < 15:
            if (state / "mesh.json").exists():
                break
            time.sleep(0.05)
        took = time.monotonic() - started
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
            said = [
                line
                for line in log_path.read_text(errors="replace").splitlines()
                if re.search(r"^(error|warning): | (ERROR|WARNING) ", line)
                and "ambient.access" not in line
            ]
            pytest.fail("`ambient up` started instead of refusing; it said:\n" + "\n".join(said))
    return process.returncode, log_path.read_text(errors="replace"), took


@pytest.mark.usefixtures("no_other_mesh")
@pytest.mark.parametrize(("policies", "where", "problem"), BAD)
def test_up_refuses_a_bad_policy_and_nothing_starts(
    tmp_path: Path, policies: str, where: str, problem: str
) -> None:
    config = shop_folder(tmp_path, policies)
    state = tmp_path / "state"
    listeners_before = set(mesh_listeners())

    code, output, took = up_expecting_refusal(config, state)

    assert code == 1, output
    assert took < 10, f"took {took:.1f}s to refuse"
    assert_one_error(output, config / "policies.yaml", where, problem)
    others = [
        line
        for line in output.splitlines()
        if line.strip() and not line.startswith(("error: ", "warning: ", "nothing was started"))
    ]
    assert others == [], output
    assert "nothing was started" in output
    assert not (state / "mesh.json").exists()
    assert set(mesh_listeners()) <= listeners_before


# -- helpers on a running shop -------------------------------------------------------------------


def config_dump(node_ip: str) -> dict[str, Any]:
    """A ztunnel's admin ``/config_dump`` (no proxy, whatever the environment says)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{node_ip}:15000/config_dump", timeout=10) as response:
        dump: dict[str, Any] = json.loads(response.read())
    return dump


def policies_in_force(node_ip: str) -> tuple[set[str], set[str]]:
    """``namespace/name`` of the AuthorizationPolicies and PeerAuthentications one ztunnel holds."""
    dump = config_dump(node_ip)
    return (
        {f"{p['namespace']}/{p['name']}" for p in dump["policies"]},
        {f"{p['namespace']}/{p['name']}" for p in dump["peerAuthentications"]},
    )


def wait_pushed(authz: set[str], peer: set[str] | None = None) -> None:
    """Poll both ztunnels until they hold exactly these policies (the push is asynchronous)."""
    wanted = (set(authz), set(peer or ()))
    wait_for(
        f"both ztunnels to hold {wanted}",
        lambda: all(policies_in_force(node) == wanted for node in NODES),
        timeout=PUSH_DEADLINE,
        every=0.02,
    )


class LogCursor:
    """The ``ambient up`` log from a point on."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.offset = len(mesh.log())

    def text(self) -> str:
        return self.mesh.log()[self.offset :]

    def wait(self, what: str, pattern: re.Pattern[str], timeout: float = 5) -> str:
        match = wait_for(what, lambda: pattern.search(self.text()), timeout=timeout)
        return match.group(0)


def pod_ip(mesh: Mesh, name: str) -> str:
    """The address of pod ``name``, or of the (first) pod of workload ``name``."""
    pods = mesh.pods("shop")
    ip: str = next(p["ip"] for p in pods if name in (p["name"], p["workload"]))
    return ip


def orders_pod_names(mesh: Mesh) -> set[str]:
    return {p["name"] for p in mesh.pods("shop") if p["workload"].startswith("orders-")}


def apply_text(mesh: Mesh, tmp_path: Path, name: str, text: str, verb: str = "apply") -> str:
    """``ambient apply`` (or ``delete``) of ``text`` written to ``tmp_path/name``."""
    path = tmp_path / name
    path.write_text(text)
    return mesh.ok(verb, "-f", str(path))


def calls(mesh: Mesh, source: str, url: str, count: int) -> tuple[list[dict[str, Any]], list[int]]:
    """``count`` new connections from ``source``: (answers, curl exit codes of the failures)."""
    answers, failures = mesh.curl_many(url, count, source=source)
    codes = [int(m.group(1)) for f in failures if (m := re.fullmatch(r"FAIL exit=(\d+)", f))]
    assert len(answers) + len(codes) == count, (answers, failures)
    return answers, codes


def assert_allowed(
    mesh: Mesh, source: str, url: str, identity: str | None, count: int = 8
) -> list[dict[str, Any]]:
    answers, codes = calls(mesh, source, url, count)
    assert codes == [], f"{source} -> {url}: {len(codes)} of {count} refused (curl {codes})"
    assert {a["peer_identity"] for a in answers} == {identity}, answers
    return answers


def assert_refused(mesh: Mesh, source: str, url: str, count: int = 8) -> None:
    answers, codes = calls(mesh, source, url, count)
    assert answers == [], f"{source} -> {url}: answered although denied: {answers[:2]}"
    assert set(codes) <= set(REFUSED), f"{source} -> {url}: curl exit codes {codes}"


def deny_samples(source_principal: str) -> float:
    """Connections the destination ztunnels refused from ``source_principal`` (both nodes)."""
    total = 0.0
    for node in NODES:
        total += sum(
            s.value
            for s in select(
                scrape(f"http://{node}:15020/metrics"),
                "istio_tcp_connections_opened_total",
                reporter="destination",
                response_flags="DENY",
                source_principal=source_principal,
            )
        )
    return total


# -- a long-lived connection, held by a client in the probe pod --------------------------------

HOLD = r"""
import json, os, socket, sys
from urllib.parse import urlsplit

proxy = urlsplit(os.environ["ALL_PROXY"])  # socks5h://<podIP>:15080: this pod's ztunnel
host, port = sys.argv[1], int(sys.argv[2])
s = socket.create_connection((proxy.hostname, proxy.port), timeout=10)
s.sendall(b"\x05\x01\x00")
assert s.recv(2) == b"\x05\x00"
name = host.encode()
s.sendall(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + port.to_bytes(2, "big"))
reply = s.recv(10)
assert reply[:2] == b"\x05\x00", reply
stream = s.makefile("rb")
for path in ("/first", "/second"):  # two requests, one connection (HTTP/1.1 keep-alive)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    status = stream.readline().split()[1].decode()
    length = 0
    while (line := stream.readline()) not in (b"\r\n", b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    body = json.loads(stream.read(length))
    print("OPEN", status, body["pod"], body["peer"], body["peer_identity"], flush=True)
s.settimeout(None)
try:
    data = s.recv(1)
    print("CLOSED eof" if not data else f"DATA {data!r}", flush=True)
except OSError as exc:
    print("CLOSED", type(exc).__name__, flush=True)
"""


class HeldConnection:
    """``ambient exec -n shop POD -- python3 -c HOLD HOST PORT``; its lines, timed as read."""

    def __init__(self, mesh: Mesh, pod: str, host: str, port: int) -> None:
        command = ["python3", "-c", HOLD, host, str(port)]
        self.process = subprocess.Popen(
            [
                AMBIENT,
                "--state-dir",
                str(mesh.state_dir),
                "exec",
                "-n",
                "shop",
                pod,
                "--",
                *command,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(),
            cwd=REPO,
            start_new_session=True,
        )
        self.lines: list[tuple[float, str]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append((time.monotonic(), line.strip()))

    def opened(self) -> list[list[str]]:
        """The two ``OPEN`` lines, split; fails if the connection did not work."""
        wait_for("the held connection to answer twice", lambda: len(self.lines) >= 2, timeout=15)
        opens = [line.split() for _, line in self.lines[:2]]
        assert [o[:2] for o in opens] == [["OPEN", "200"]] * 2, self.lines
        return opens

    def closed_at(self) -> float | None:
        return next((t for t, line in self.lines if line.startswith("CLOSED")), None)

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.kill()  # the exec'd client itself (ambient exec replaces itself)
        self.process.wait(10)
        self.reader.join(10)
        assert self.process.stdout is not None and self.process.stderr is not None
        self.process.stdout.close()
        errors = self.process.stderr.read()
        self.process.stderr.close()
        return errors


# -- the shop, shared by TestPolicies ---------------------------------------------------------


@pytest.fixture(scope="class")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """`ambient up examples/shop`, shared by one class's tests and stopped when it ends."""
    root = tmp_path_factory.mktemp("shop")
    mesh = Mesh(SHOP, root / "state", root / "up.log", single_process=True).start()
    try:
        yield mesh
    finally:
        mesh.stop()


@pytest.fixture
def shop(mesh: Mesh) -> Mesh:
    """The shared shop, checked to hold no policy (each test removes what it applies)."""
    wait_pushed(set(), set())
    return mesh


class TestPolicies:
    def test_section4_strict_deny_all(self, shop: Mesh) -> None:
        mesh, log = shop, LogCursor(shop)
        probe_ip = pod_ip(mesh, "probe")
        orders = orders_pod_names(mesh)
        assert len(orders) == 4
        assert_allowed(mesh, "probe", "http://orders:8080/before", PROBE, 4)
        denied_before = deny_samples(PROBE)
        try:
            out = mesh.ok("apply", "-f", str(SECTION4))
            assert out.splitlines() == [
                "authorizationpolicy/deny-all created",
                "authorizationpolicy/orders-allow-web created",
                "peerauthentication/default created",
            ], out
            wait_pushed(SECTION4_POLICIES, MESH_WIDE_STRICT)

            answer = mesh.curl("http://orders:8080/s4")  # curl --fail: HTTP 200
            assert (answer["app"], answer["peer_identity"]) == ("orders", WEB), answer
            answers = assert_allowed(mesh, "deploy/web", "http://orders:8080/s4", WEB)
            assert {a["app"] for a in answers} == {"orders"}
            assert {a["pod"] for a in answers} == orders  # every orders pod, on both nodes
            assert_refused(mesh, "probe", "http://orders:8080/s4")
            assert_refused(mesh, "deploy/web", "http://web:8080/s4", 2)

            rbac = re.compile(
                rf"ambient\.ztunnel +RBAC rejected conn={re.escape(probe_ip)}:\d+"
                rf"\({re.escape(PROBE)}\)->127\.10\.\d+\.\d+:8080: no ALLOW policy matched"
            )
            log.wait("the RBAC rejected line for probe", rbac)
            assert deny_samples(PROBE) >= denied_before + 8
        finally:
            out = mesh.ok("delete", "-f", str(SECTION4))
        assert out.splitlines() == [
            "authorizationpolicy/deny-all deleted",
            "authorizationpolicy/orders-allow-web deleted",
            "peerauthentication/default deleted",
        ], out
        wait_pushed(set(), set())
        assert_allowed(mesh, "probe", "http://orders:8080/after", PROBE)
        assert_allowed(mesh, "deploy/web", "http://web:8080/after", WEB, 2)
        assert_allowed(mesh, "deploy/web", "http://orders:8080/after", WEB, 4)

    def test_zc_policies_lists_section4(self, shop: Mesh) -> None:
        mesh = shop
        try:
            mesh.ok("apply", "-f", str(SECTION4))
            wait_pushed(SECTION4_POLICIES, MESH_WIDE_STRICT)
            table = mesh.ok("zc", "policies")
        finally:
            mesh.ok("delete", "-f", str(SECTION4))
        header, *rows = [line.split() for line in table.strip().splitlines()]
        assert header == ["NAMESPACE", "POLICY", "NAME", "ACTION", "SCOPE"], table
        # istioctl's cells: ztunnel's action and scope names
        assert ["shop", "deny-all", "Allow", "Namespace"] in rows, table
        assert ["shop", "orders-allow-web", "Allow", "WorkloadSelector"] in rows, table

    def test_zc_all_table_shows_policies(self, shop: Mesh) -> None:
        mesh = shop
        try:
            mesh.ok("apply", "-f", str(SECTION4))
            wait_pushed(SECTION4_POLICIES, MESH_WIDE_STRICT)
            result = mesh.run("zc", "all")
        finally:
            mesh.ok("delete", "-f", str(SECTION4))
        assert result.returncode == 0, result.stderr[-2000:]
        assert "Traceback" not in result.stderr
        assert "orders-allow-web" in result.stdout

    def test_established_connection_is_closed_within_1s_of_a_deny(
        self, shop: Mesh, tmp_path: Path
    ) -> None:
        mesh, log = shop, LogCursor(shop)
        held = HeldConnection(mesh, "probe", "orders", 8080)
        policy = tmp_path / "deny-probe.yaml"
        policy.write_text(DENY_PROBE)
        try:
            first, second = held.opened()
            # One connection: the same pod answered both requests, seen from the same port.
            assert first[2:] == second[2:], (first, second)
            assert first[4] == PROBE
            time.sleep(0.5)
            assert held.closed_at() is None, held.lines  # it stays open on its own

            applying = time.monotonic()
            mesh.ok("apply", "-f", str(policy))
            applied = time.monotonic()
            wait_for("the held connection to close", held.closed_at, timeout=5, every=0.01)
            closed = held.closed_at()
            assert closed is not None
            assert closed > applying, held.lines
            assert closed - applied <= 1.0, (
                f"closed {closed - applied:.3f}s after `ambient apply` returned"
            )
            log.wait(
                "the RBAC line for the closed connection",
                re.compile(
                    rf"RBAC rejected conn=[\d.]+:\d+\({re.escape(PROBE)}\)->[\d.]+:8080: "
                    r"closing established connection: denied by DENY policy shop/deny-probe"
                ),
            )
            assert_refused(mesh, "probe", "http://orders:8080/new", 4)  # new ones too
            assert_allowed(mesh, "deploy/web", "http://orders:8080/web", WEB, 4)
        finally:
            held.stop()
            mesh.ok("delete", "-f", str(policy))
        wait_pushed(set(), set())
        assert_allowed(mesh, "probe", "http://orders:8080/again", PROBE, 4)

    def test_a_closed_connection_is_logged_once(self, shop: Mesh, tmp_path: Path) -> None:
        mesh, log = shop, LogCursor(shop)
        held = HeldConnection(mesh, "probe", "orders", 8080)
        try:
            held.opened()
            apply_text(mesh, tmp_path, "deny-probe.yaml", DENY_PROBE)
            wait_for("the held connection to close", held.closed_at, timeout=5)
            time.sleep(0.5)  # let any further reconcile run
        finally:
            held.stop()
            apply_text(mesh, tmp_path, "deny-probe.yaml", DENY_PROBE, "delete")
            wait_pushed(set())
        lines = [line for line in log.text().splitlines() if "closing established" in line]
        assert len(lines) == 1, lines

    @pytest.mark.parametrize("namespace", ["istio-system", "shop"])
    def test_strict_peer_authentication_refuses_plaintext(
        self, shop: Mesh, tmp_path: Path, namespace: str
    ) -> None:
        mesh, log = shop, LogCursor(shop)
        probe_ip = pod_ip(mesh, "probe")
        policy = tmp_path / "strict.yaml"
        policy.write_text(strict(namespace))
        try:
            mesh.ok("label", "pod", "probe", "istio.io/dataplane-mode=none", "-n", "shop")
            wait_for("probe on TCP", lambda: mesh.workloads()["probe"]["protocol"] == "TCP")
            # PERMISSIVE (no PeerAuthentication): plaintext from probe is accepted.
            answers = assert_allowed(mesh, "probe", "http://orders:8080/permissive", None)
            assert {a["pod"] for a in answers} == orders_pod_names(mesh)

            mesh.ok("apply", "-f", str(policy))
            wait_pushed(set(), {f"{namespace}/default"})
            assert_refused(mesh, "probe", "http://orders:8080/strict")
            log.wait(
                "the RBAC line for plaintext",
                re.compile(
                    rf"RBAC rejected conn={re.escape(probe_ip)}\(no identity\)->[\d.]+:8080: "
                    r"plaintext refused: PeerAuthentication mTLS STRICT"
                ),
            )
            assert_allowed(mesh, "deploy/web", "http://orders:8080/mtls", WEB)  # mTLS still fine
        finally:
            mesh.run("delete", "-f", str(policy))
            mesh.ok("label", "pod", "probe", "istio.io/dataplane-mode-", "-n", "shop")
        wait_pushed(set(), set())
        wait_for("probe on HBONE", lambda: mesh.workloads()["probe"]["protocol"] == "HBONE")
        assert_allowed(mesh, "probe", "http://orders:8080/back", PROBE, 4)

    def test_established_plaintext_connection_is_closed_by_strict(
        self, shop: Mesh, tmp_path: Path
    ) -> None:
        mesh = shop
        policy = tmp_path / "strict.yaml"
        policy.write_text(strict("istio-system"))
        held = None
        try:
            mesh.ok("label", "pod", "probe", "istio.io/dataplane-mode=none", "-n", "shop")
            wait_for("probe on TCP", lambda: mesh.workloads()["probe"]["protocol"] == "TCP")
            held = HeldConnection(mesh, "probe", "orders", 8080)
            first, second = held.opened()
            assert first[2:] == second[2:] and first[4] == "None", (first, second)
            mesh.ok("apply", "-f", str(policy))
            applied = time.monotonic()
            wait_for("the held plaintext connection to close", held.closed_at, timeout=3)
            closed = held.closed_at()
            assert closed is not None and closed - applied <= 1.0
        finally:
            if held is not None:
                held.stop()
            mesh.run("delete", "-f", str(policy))
            mesh.ok("label", "pod", "probe", "istio.io/dataplane-mode-", "-n", "shop")
            wait_pushed(set(), set())
            wait_for("probe on HBONE", lambda: mesh.workloads()["probe"]["protocol"] == "HBONE")

    @pytest.mark.parametrize(("policies", "where", "problem"), BAD)
    def test_bad_policy_is_refused_and_section4_stays(
        self, shop: Mesh, tmp_path: Path, policies: str, where: str, problem: str
    ) -> None:
        mesh = shop
        bad_file = tmp_path / "bad.yaml"
        bad_file.write_text(policies)
        try:
            mesh.ok("apply", "-f", str(SECTION4))
            wait_pushed(SECTION4_POLICIES, MESH_WIDE_STRICT)
            before = [config_dump(node) for node in NODES]

            result = mesh.run("apply", "-f", str(bad_file))
            assert result.returncode != 0, result
            assert result.stdout == "", result.stdout  # nothing configured, not even document 1
            assert_one_error(result.stderr, bad_file, where, problem)

            time.sleep(0.2)  # a push, had there been one, takes milliseconds
            for node, dump in zip(NODES, before, strict=True):
                after = config_dump(node)
                assert (after["policies"], after["peerAuthentications"]) == (
                    dump["policies"],
                    dump["peerAuthentications"],
                ), node
            assert_allowed(mesh, "deploy/web", "http://orders:8080/still", WEB, 4)
            assert_refused(mesh, "probe", "http://orders:8080/still", 4)
        finally:
            # Document 1 alone (the bad file would be refused): "not found" unless applied.
            apply_text(mesh, tmp_path, "deny-web.yaml", DENY_WEB, "delete")
            mesh.ok("delete", "-f", str(SECTION4))
        wait_pushed(set(), set())

    def test_dry_run_policy_logs_but_does_not_deny(self, shop: Mesh, tmp_path: Path) -> None:
        mesh, log = shop, LogCursor(shop)
        web_ip = pod_ip(mesh, "web")
        policy = tmp_path / "dry-run.yaml"
        policy.write_text(DRY_RUN_DENY_WEB)
        try:
            mesh.ok("apply", "-f", str(policy))
            wait_pushed({"shop/dry-deny-web"})
            (entry,) = config_dump(NODES[0])["policies"]
            assert (entry["action"], entry["dryRun"]) == ("DENY", True), entry
            assert_allowed(mesh, "deploy/web", "http://orders:8080/dry", WEB)
            log.wait(
                "the dry-run line",
                re.compile(
                    rf"ambient\.ztunnel +dry-run policy matched conn={re.escape(web_ip)}"
                    rf"\({re.escape(WEB)}\)->[\d.]+:8080: shop/dry-deny-web \(would be denied\)"
                ),
            )
            assert "RBAC rejected" not in log.text()
        finally:
            mesh.ok("delete", "-f", str(policy))
        wait_pushed(set())

    def test_l7_policy_applied_at_runtime_is_warned_about(self, shop: Mesh, tmp_path: Path) -> None:
        mesh, log = shop, LogCursor(shop)
        policy = tmp_path / "get-only.yaml"
        policy.write_text(GET_ONLY)
        try:
            result = mesh.run("apply", "-f", str(policy))
            assert result.returncode == 0, result
            wait_pushed({"shop/orders-get-only"})
            assert_refused(mesh, "deploy/web", "http://orders:8080/get", 4)
            said = result.stdout + result.stderr + log.text()
            assert "orders-get-only" in said and "ztunnel cannot enforce" in said, said[-2000:]
        finally:
            mesh.ok("delete", "-f", str(policy))
            wait_pushed(set())


# -- a mesh of its own: a policy with HTTP fields in the folder `up` starts from -----------------


def test_l7_only_allow_rule_never_allows_and_up_warns(tmp_path: Path) -> None:
    config = shop_folder(tmp_path, GET_ONLY)
    mesh = Mesh(config, tmp_path / "state", tmp_path / "up.log", single_process=True).start()
    try:
        warnings = [line for line in mesh.log().splitlines() if GET_ONLY_WARNING.search(line)]
        assert len(warnings) == 1, mesh.log()[-3000:]
        wait_pushed({"shop/orders-get-only"})
        (entry,) = config_dump(NODES[0])["policies"]
        assert (entry["action"], entry["groups"]) == ("ALLOW", 0), entry  # the rule was dropped

        # curl's GET is exactly what the rule names, and still: an ALLOW that never matches.
        assert_refused(mesh, "deploy/web", "http://orders:8080/get")
        web = pod_ip(mesh, "web")
        assert re.search(
            rf"RBAC rejected conn={re.escape(web)}:\d+\({re.escape(WEB)}\)->[\d.]+:8080: "
            r"no ALLOW policy matched",
            mesh.log(),
        ), mesh.log()[-3000:]
        answers, _ = parse_answers(mesh.exec("probe", "curl", "-sS", "http://web:8080/").stdout)
        assert len(answers) == 1  # web itself is not selected: it still answers
    finally:
        mesh.stop()
