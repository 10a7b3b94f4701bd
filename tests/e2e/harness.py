"""Drive the real ``ambient`` command line as subprocesses, as a user would.

A mesh binds fixed loopback addresses (pods 127.10.x.y, nodes 127.1.0.N), so
only one can run on a machine at a time: :class:`Mesh` takes a machine-wide
lock (so concurrent test runs queue instead of racing for the addresses), waits
for those addresses to be free before starting one and always stops it (SIGINT,
then SIGKILL if it does not exit in time).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.e2e.manifests import (
    deployment,
    manifest,
    namespace,
    service,
    service_account,
)

REPO = Path(__file__).resolve().parents[2]
SHOP = REPO / "examples" / "shop"
MESH_PREFIXES = ("127.10.", "127.20.", "127.1.0.")
"""Pods, services and nodes of a local mesh."""

T = TypeVar("T")


def ambient_binary() -> str:
    beside = Path(sys.executable).with_name("ambient")
    if beside.exists():
        return str(beside)
    found = shutil.which("ambient")
    if found is None:
        pytest.fail("the `ambient` console script is not installed (pip install -e .)")
    return found


AMBIENT = ambient_binary()


def clean_env() -> dict[str, str]:
    """Our environment without a state folder or proxies that would steer the CLI or curl."""
    return {
        k: v
        for k, v in os.environ.items()
        if k != "AMBIENT_STATE_DIR" and not k.lower().endswith("_proxy")
    }


def ambient(
    *args: str, state_dir: Path, timeout: float = 30, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run ``ambient ARGS --state-dir STATE_DIR`` and capture its output."""
    result = subprocess.run(
        [AMBIENT, "--state-dir", str(state_dir), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(),
        cwd=REPO,
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"`ambient {' '.join(args)}` exited {result.returncode}\n"
            f"stdout: {result.stdout}\nstderr: {result.stderr}"
        )
    return result


def wait_for(
    what: str, probe: Callable[[], T | None], timeout: float = 10, every: float = 0.1
) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


# -- listeners ------------------------------------------------------------------------------


def mesh_listeners() -> list[str]:
    """``ip:port`` of every TCP listener on a mesh address (pods, services, nodes)."""
    out = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[3].startswith(MESH_PREFIXES):
            found.append(parts[3])
    return sorted(found)


def wait_mesh_addresses_free(timeout: float = 90) -> None:
    """Another mesh (someone else's) may be running: wait for it to go, never kill it."""
    deadline = time.monotonic() + timeout
    while busy := mesh_listeners():
        if time.monotonic() > deadline:
            pytest.fail(f"mesh addresses still in use after {timeout:g}s: {busy[:8]}")
        time.sleep(1)


MESH_LOCK = Path(os.environ.get("AMBIENT_E2E_MESH_LOCK", "/tmp/ambient-e2e-mesh.lock"))
"""One mesh at a time on the machine's loopback addresses; a run in a network namespace of
its own (``unshare -n``) can name a lock of its own."""
_lock_file: Any = None
_lock_depth = 0


def acquire_mesh_lock(timeout: float = 1200) -> None:
    """Hold the machine-wide mesh lock (re-entrant within this process).

    The kernel drops it if this process dies, so a crashed run never blocks the next.
    """
    global _lock_file, _lock_depth
    if _lock_depth == 0:
        handle = MESH_LOCK.open("a")
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        pytest.fail(f"another test run held {MESH_LOCK} for {timeout:g}s")
                    time.sleep(0.5)
        except BaseException:  # a timeout or Ctrl-C while waiting: no file left open
            handle.close()
            raise
        _lock_file = handle
    _lock_depth += 1


def release_mesh_lock() -> None:
    global _lock_file, _lock_depth
    if _lock_depth == 0:
        return
    _lock_depth -= 1
    if _lock_depth == 0 and _lock_file is not None:
        fcntl.flock(_lock_file, fcntl.LOCK_UN)
        _lock_file.close()
        _lock_file = None


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def pid_gone(pid: int) -> bool:
    """True once ``pid`` has exited (for ``wait_for``)."""
    return not pid_alive(pid)


# -- a running mesh -------------------------------------------------------------------------

_PID = re.compile(r"\(pid (\d+)\)")
_RESTARTS = re.compile(r"restarts (\d+)")


@dataclass(frozen=True)
class PodState:
    name: str
    ready: bool
    pid: int | None
    restarts: int


@dataclass
class Mesh:
    """``ambient up CONFIG_DIR`` in the background with its own state folder.

    By default the control plane and the ztunnels run as child processes of ``up``;
    ``single_process`` runs ``up --single-process``. ``args`` go to ``up``.
    """

    config_dir: Path
    state_dir: Path
    log_path: Path
    single_process: bool = False
    args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None
    up_args: tuple[str, ...] = ()  # e.g. ("--netns",)
    runner: tuple[str, ...] = ()
    """How to run ``ambient`` for ``up`` (default: the console script), e.g. as another user."""
    env: dict[str, str] | None = None
    """``up``'s environment (default: :func:`clean_env`)."""
    _log: Any = field(default=None, repr=False)
    _locked: bool = field(default=False, repr=False)

    def start(self, wait: float = 30) -> Mesh:
        acquire_mesh_lock()
        self._locked = True
        try:
            self._start(wait)
        except BaseException:  # pytest-timeout, Ctrl-C, a failed wait: no mesh left running
            self.stop()
            raise
        return self

    def _start(self, wait: float) -> None:
        wait_mesh_addresses_free()
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                *(self.runner or (AMBIENT,)),
                "up",
                str(self.config_dir),
                "--state-dir",
                str(self.state_dir),
                *(["--single-process"] if self.single_process else []),
                *self.args,
                *self.up_args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env if self.env is not None else clean_env(),
            cwd=REPO,
            start_new_session=True,
        )
        ready = self.run("status", "--wait", str(wait), timeout=wait + 10)
        if ready.returncode != 0:
            self.stop()  # first, so that the log below has the whole story
            pytest.fail(f"mesh not ready: {ready.stdout}{ready.stderr}\nlog:\n{self.log()}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self, timeout: float = 20) -> int | None:
        """SIGINT (Ctrl-C), then SIGKILL if it has not exited within ``timeout``."""
        code = None
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGINT)
            try:
                code = self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
                code = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._locked:
            self._locked = False
            release_mesh_lock()
        return code

    def log(self) -> str:
        """What ``up`` logged, then what its control plane and ztunnel processes logged."""
        parts = [self.log_path.read_text(errors="replace")]
        for path in sorted((self.state_dir / "logs").glob("ambient-system_*.log")):
            parts.append(path.read_text(errors="replace"))
        return "".join(parts)

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return ambient(*args, state_dir=self.state_dir, timeout=timeout)

    def ok(self, *args: str, timeout: float = 30) -> str:
        """Run an ``ambient`` command that must succeed; returns its stdout."""
        return ambient(*args, state_dir=self.state_dir, timeout=timeout, check=True).stdout

    def stall_report(self, nodes: Sequence[str] = ("127.1.0.1", "127.1.0.2")) -> str:
        """What a test prints when traffic stalls: each node proxy's ``/debug/tasks`` (its
        HBONE connections' windows and queues, where every asyncio task waits; hosted
        waypoints included) and the end of the mesh's log."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        parts = []
        for node in nodes:
            try:
                with opener.open(f"http://{node}:15000/debug/tasks", timeout=10) as answer:
                    parts.append(
                        f"--- /debug/tasks of the node proxy at {node}\n{answer.read().decode()}"
                    )
            except OSError as exc:
                parts.append(f"--- /debug/tasks of the node proxy at {node}: {exc}")
        parts.append(f"--- the end of the mesh's log\n{self.log()[-6000:]}")
        return "\n".join(parts)

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "-o", "json"))

    # -- views --------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self.json("status")
        return result

    def pod_states(self) -> dict[str, PodState]:
        """Pods by ``namespace/name`` from ``ambient status -o json`` (pid and restarts)."""
        pods = {}
        for component in self.status()["components"]:
            kind, _, name = component["name"].partition("/")
            if kind != "pod":
                continue
            pid = _PID.search(component["detail"])
            restarts = _RESTARTS.search(component["detail"])
            pods[name] = PodState(
                name,
                bool(component["ready"]),
                int(pid.group(1)) if pid else None,
                int(restarts.group(1)) if restarts else 0,
            )
        return pods

    def pods(self, namespace: str = "shop") -> list[dict[str, Any]]:
        """``ambient get pods -o json`` as {name, namespace, ip, node, workload} (a
        Deployment's pods name it in ``ownerReferences``)."""
        out = []
        for pod in self.json("get", "pods", "-n", namespace)["items"]:
            meta = pod["metadata"]
            owners = [o["name"] for o in meta.get("ownerReferences", [])]
            out.append(
                {
                    "name": meta["name"],
                    "namespace": meta["namespace"],
                    "ip": pod["status"]["podIP"],
                    "node": pod["spec"]["nodeName"],
                    "workload": owners[0] if owners else meta["name"],
                }
            )
        return out

    def workloads(self, namespace: str = "shop") -> dict[str, dict[str, Any]]:
        """``ambient ztunnel-config workloads -o json`` by pod name."""
        items = self.json("zc", "workloads", "--workload-namespace", namespace)
        return {w["name"]: w for w in items}

    def exec(
        self, target: str, *command: str, namespace: str = "shop", timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return self.run("exec", "-n", namespace, target, "--", *command, timeout=timeout)

    def curl(self, url: str, source: str = "deploy/web") -> dict[str, Any]:
        """One HTTP GET from ``source`` with curl (via its ztunnel); the app's JSON answer."""
        result = self.exec(source, "curl", "-sS", "--fail", "-m", "10", url)
        if result.returncode != 0:
            pytest.fail(f"curl {url} from {source} failed ({result.returncode}): {result.stderr}")
        answer: dict[str, Any] = json.loads(result.stdout)
        return answer

    def curl_many(
        self, url: str, count: int, source: str = "deploy/web"
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """``count`` new connections from one shell loop; (answers, failures)."""
        script = (
            f'for i in $(seq {count}); do curl -sS -m 10 "$0" || echo "FAIL exit=$?"; echo; done'
        )
        result = self.exec(source, "sh", "-c", script, url, timeout=count * 2 + 30)
        return parse_answers(result.stdout, result.stderr)

    def curl_many_with_header(
        self, url: str, count: int, header: str, source: str = "deploy/web"
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """``count`` new connections sending ``header``; (answers, failures)."""
        script = (
            f'for i in $(seq {count}); do curl -sS -m 10 -H "$1" "$0" || echo "FAIL exit=$?"; '
            "echo; done"
        )
        result = self.exec(source, "sh", "-c", script, url, header, timeout=count * 2 + 30)
        return parse_answers(result.stdout, result.stderr)


def parse_answers(stdout: str, stderr: str = "") -> tuple[list[dict[str, Any]], list[str]]:
    answers, failures = [], []
    for line in stdout.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            answers.append(json.loads(line))
        else:
            failures.append(line)
    if failures and stderr:
        failures.append(f"stderr: {stderr.strip()}")
    return answers, failures


# -- metrics --------------------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def scrape(url: str) -> list[Sample]:
    """Prometheus text from ``url``, parsed (no proxy, whatever the environment says)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as response:
        text = response.read().decode()
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match:
            labels = dict(_LABEL.findall(match.group(2) or ""))
            samples.append(Sample(match.group(1), labels, float(match.group(3))))
    return samples


def select(samples: Sequence[Sample], name: str, **labels: str) -> list[Sample]:
    return [
        s
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]


# web (a sleeping pod) on node-1, orders (examples/shop/app.py) on node-2: the smallest
# mesh whose traffic crosses nodes, for the tests that start its processes themselves.
TWO_NODE_MESH = manifest(
    namespace("shop"),
    service_account("shop", "web"),
    service_account("shop", "orders"),
    service("shop", "orders", [{"name": "http", "port": 8080, "targetPort": 8080}]),
    deployment("shop", "web", ["sleep", "infinity"], service_account="web", node="node-1"),
    deployment(
        "shop", "orders", ["python3", "app.py", "--name", "orders", "--port", "8080"],
        annotations={"ambient.io/application-tunnel": "PROXY"},
        service_account="orders", node="node-2",
        ports=[{"containerPort": 8080, "name": "http"}],
    ),
)  # fmt: skip
