"""ambient-cni called as a container runtime calls it, with a real node agent and API server.

``ambient node-agent`` runs as a process with the ``istio-system/istio-cni`` account's
token (the RBAC ``ambient install`` creates) and the command line of the node-agent
DaemonSet of ``ambient install --profile ambient`` (its host mounts standing for the
test's folders), installs the plugin into a CNI folder of the test's (a bridge network's ``.conflist`` already there, as on a node), and the
test plays the runtime: it makes the sandbox's network namespace and a veth as the
bridge plugin would (into a "node" namespace of its own, never the host's), builds
the plugin's stdin from the chained ``.conflist`` with the bridge's ``prevResult``, and
execs the installed ``ambient-cni`` with the ``CNI_*`` environment. Then it checks
what the pod's namespace holds (``nft``, ``ip rule``) and what the node's ztunnel
would be told (the agent's ``nodeagent.sock``, as ``ambient ztunnel`` reads it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ambient.cni.plugin import AGENT_REFUSED, DEFAULT_RUN_DIR, TRY_AGAIN_LATER
from ambient.devcluster import DevCluster
from ambient.install.workloads import NODE_AGENT, workload_objects
from tests.cni import HOST_PYTHON, invoke_plugin, runtime_config
from tests.containers import container_argv, only_container
from tests.kube.conftest import Kubectl
from tests.kube.controlplane.conftest import ambient, service_account_kubeconfig
from tests.netns.conftest import netns_unavailable

pytestmark = [pytest.mark.slow, pytest.mark.kube, pytest.mark.root]

NODE = "cni-node-1"
START_TIMEOUT = 60.0
BRIDGE_LIST = {
    "cniVersion": "1.0.0",
    "name": "k8s-pod-network",
    "plugins": [
        {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipam": {"type": "host-local"}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
    ],
}


@pytest.fixture(scope="module", autouse=True)
def _needs_netns() -> None:
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(f"CNI plugin e2e: {reason}")
    if not Path(HOST_PYTHON).is_file():
        pytest.skip(f"the plugin runs with the node's python3: {HOST_PYTHON} is missing")


def sh(*argv: str, check: bool = True) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: {done.stderr}")
    return done.stdout


@dataclass
class Node:
    """The node agent's process and the node's CNI folders."""

    root: Path
    kubeconfig: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def plugin(self) -> Path:
        return self.root / "bin" / "ambient-cni"

    @property
    def conflist(self) -> Path:
        return self.root / "net.d" / "10-bridge.conflist"

    @property
    def ztunnel_socket(self) -> Path:
        return self.root / "ztunnel" / "nodeagent.sock"

    @property
    def log(self) -> Path:
        return self.root / "node-agent.log"

    def command(self) -> tuple[list[str], dict[str, str]]:
        """The node-agent DaemonSet's container, as a kubelet would start it on this node:
        its command line from the manifest, the host folders it mounts standing for the
        test's, the account's token from a kubeconfig (in a pod: the in-cluster one)."""
        daemonset = next(o for o in workload_objects() if o["metadata"]["name"] == NODE_AGENT)
        mounts = {
            "/host/opt/cni/bin": self.root / "bin",
            "/host/etc/cni/net.d": self.root / "net.d",
            DEFAULT_RUN_DIR: self.run_dir,
            "/var/run/ztunnel": self.ztunnel_socket.parent,
            "/var/run/netns": Path("/var/run/netns"),
        }
        fields = {"spec.nodeName": NODE, "status.podIP": "127.0.0.1",
                  "metadata.name": f"{NODE_AGENT}-abcde", "metadata.namespace": "istio-system",
                  "spec.serviceAccountName": "istio-cni"}  # fmt: skip
        argv, env = container_argv(only_container(daemonset), fields, mounts)
        assert argv[0] == "ambient"
        return [sys.executable, "-m", *argv], env | {"KUBECONFIG": str(self.kubeconfig)}

    def start(self) -> None:
        argv, env = self.command()
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                ["setpriv", "--pdeathsig", "TERM", "--", *argv],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **env},
            )  # fmt: skip

    def wait_chained(self) -> None:
        """The agent chains the plugin only once it serves: that is its readiness."""
        deadline = time.monotonic() + START_TIMEOUT
        while self.conflist_plugins()[-1].get("type") != "ambient-cni":
            assert self.process is not None
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the node agent did not chain the plugin:\n{self.tail()}")
            time.sleep(0.05)

    def stop(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def conflist_plugins(self) -> list[dict[str, Any]]:
        plugins: list[dict[str, Any]] = json.loads(self.conflist.read_text())["plugins"]
        return plugins

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def ztunnel_view(self, after: int = -1) -> dict[str, Any]:
        """What the node's ztunnel is told (``GET /pods``, a long poll when ``after`` is
        the current generation)."""
        done = subprocess.run(
            ["curl", "-s", "--max-time", "30", "--unix-socket", str(self.ztunnel_socket),
             f"http://node-agent/pods?after={after}"],
            capture_output=True, text=True, timeout=40, check=True,
        )  # fmt: skip
        view: dict[str, Any] = json.loads(done.stdout)
        return view

    def ztunnel_asks(self, ip: str, enabled: bool) -> None:
        """What a ztunnel sends once its in-pod listeners are open (or when a pod leaves)."""
        body = json.dumps({"ip": ip, "enabled": enabled})
        out = subprocess.run(
            ["curl", "-s", "-f", "--unix-socket", str(self.ztunnel_socket), "-d", body,
             "http://node-agent/redirection"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr

    def saved(self) -> dict[str, Any]:
        pods: dict[str, Any] = json.loads((self.run_dir / "cni-pods.json").read_text())["pods"]
        return pods


@pytest.fixture(scope="module")
def node(
    dev_cluster: DevCluster, kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Node]:
    installed = ambient("install", "--kubeconfig", str(dev_cluster.kubeconfig))
    assert installed.returncode == 0, installed.stderr
    kubectl("apply", "-f", "-", stdin=json.dumps(
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}}
    ))  # fmt: skip
    root = tmp_path_factory.mktemp("cni-node")
    for sub in ("bin", "net.d", "ztunnel"):
        (root / sub).mkdir()
    kubeconfig = service_account_kubeconfig(dev_cluster, kubectl, root / "kubeconfig", "istio-cni")
    kubectl("apply", "-f", "-", stdin=json.dumps(owner_daemonset()))
    running = Node(root, kubeconfig)
    running.conflist.write_text(json.dumps(BRIDGE_LIST))
    running.start()
    running.wait_chained()
    yield running
    running.stop()
    kubectl("delete", "node", NODE, "--wait=false", check=False)
    kubectl("delete", "ds", NODE_AGENT, "-n", "istio-system", "--ignore-not-found", check=False)


def owner_daemonset() -> dict[str, Any]:
    """The node-agent DaemonSet as installed, but for no node (the agent runs as the test's
    process): what an agent asks on exit to tell an upgrade from an uninstall."""
    daemonset = next(o for o in workload_objects() if o["metadata"]["name"] == NODE_AGENT)
    daemonset["spec"]["template"]["spec"]["nodeSelector"] = {"ambient.test/no-such-node": "true"}
    return daemonset


@dataclass
class Sandbox:
    """A pod sandbox as a runtime and its bridge plugin leave it before the chained plugins."""

    name: str
    ip: str

    @property
    def path(self) -> str:
        return f"/var/run/netns/{self.name}"

    @property
    def node_ns(self) -> str:
        return f"{self.name}-node"

    def make(self) -> None:
        sh("ip", "netns", "add", self.name)
        sh("ip", "netns", "add", self.node_ns)
        host_if = "v" + self.name[-8:]
        sh("ip", "-n", self.node_ns, "link", "add", host_if, "type", "veth", "peer", "name",
           "eth0", "netns", self.name)  # fmt: skip
        sh("ip", "-n", self.node_ns, "addr", "add", "10.99.1.1/24", "dev", host_if)
        sh("ip", "-n", self.node_ns, "link", "set", host_if, "up")
        sh("ip", "-n", self.name, "addr", "add", f"{self.ip}/24", "dev", "eth0")
        sh("ip", "-n", self.name, "link", "set", "eth0", "up")
        sh("ip", "-n", self.name, "link", "set", "lo", "up")
        sh("ip", "-n", self.name, "route", "add", "default", "via", "10.99.1.1")

    def remove(self) -> None:
        sh("ip", "netns", "delete", self.name, check=False)
        sh("ip", "netns", "delete", self.node_ns, check=False)

    def prev_result(self) -> dict[str, Any]:
        return {
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "sandbox": self.path}],
            "ips": [{"address": f"{self.ip}/24", "gateway": "10.99.1.1", "interface": 0}],
        }

    def rules(self) -> str:
        return sh("ip", "netns", "exec", self.name, "nft", "list", "table", "inet", "ambient")

    def redirected(self) -> bool:
        rules = self.rules()
        return "redirect to :15001" in rules and "redirect to :15006" in rules


_ips = iter(range(10, 250))


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    made = Sandbox(f"cni-{uuid.uuid4().hex[:8]}", f"10.99.1.{next(_ips)}")
    made.make()
    yield made
    made.remove()


def pod(kubectl: Kubectl, namespace: str, name: str, node: str = NODE, **labels: str) -> str:
    """A Pod bound to ``node`` (as the scheduler would); returns its uid."""
    kubectl("create", "namespace", namespace, check=False)
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "app:1"}]},
    }
    kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
    return kubectl("get", "pod", name, "-n", namespace, "-o", "jsonpath={.metadata.uid}").stdout


def add(node: Node, sandbox: Sandbox, namespace: str, name: str, uid: str) -> tuple[int, Any, str]:
    """CNI ADD as containerd issues it for the sandbox of pod namespace/name."""
    config = runtime_config(json.loads(node.conflist.read_text()), "ambient-cni",
                            sandbox.prev_result())  # fmt: skip
    env = {
        "CNI_CONTAINERID": uuid.uuid4().hex,
        "CNI_NETNS": sandbox.path,
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};"
        f"K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID={uid}",
    }
    return invoke_plugin(node.plugin, "ADD", config, env)


def test_the_agent_chains_the_plugin_into_the_nodes_conflist(node: Node) -> None:
    assert node.conflist_plugins() == [
        *BRIDGE_LIST["plugins"],
        {
            "type": "ambient-cni",
            "agent_run_dir": str(node.run_dir),
            "exclude_namespaces": ["kube-system", "istio-system"],
        },
    ]
    assert node.plugin.read_bytes().startswith(f"#!{HOST_PYTHON} -IS\n".encode())


def test_an_enrolled_pod_is_captured_before_add_returns(
    node: Node, kubectl: Kubectl, sandbox: Sandbox
) -> None:
    kubectl("create", "namespace", "cni-mesh", check=False)
    kubectl("label", "namespace", "cni-mesh", "istio.io/dataplane-mode=ambient", "--overwrite")
    uid = pod(kubectl, "cni-mesh", "app")
    status, out, err = add(node, sandbox, "cni-mesh", "app", uid)
    assert status == 0, f"{out} {err}\n{node.tail()}"
    assert out == sandbox.prev_result()  # passed through for the next plugin
    assert sandbox.redirected()  # before the runtime starts a container
    assert "fwmark 0x111/0xfff lookup 100" in sh("ip", "-n", sandbox.name, "rule")
    listed = node.ztunnel_view()["pods"][sandbox.ip]
    assert listed["netns"] == sandbox.path
    assert (listed["namespace"], listed["name"]) == ("cni-mesh", "app")
    assert listed["inode"] == Path(sandbox.path).stat().st_ino
    assert node.saved()[sandbox.ip]["uid"] == uid
    # captured, not yet served: the annotation waits for the ztunnel
    assert redirection_annotation(kubectl, "cni-mesh", "app") == ""


def test_a_pod_outside_the_mesh_is_known_and_captured_once_enrolled(
    node: Node, kubectl: Kubectl, sandbox: Sandbox
) -> None:
    uid = pod(kubectl, "cni-plain", "app")
    status, out, err = add(node, sandbox, "cni-plain", "app", uid)
    assert status == 0, f"{out} {err}"
    assert not sandbox.redirected() and "chain prerouting" in sandbox.rules()
    assert sandbox.ip in node.ztunnel_view()["pods"]
    # `kubectl label namespace cni-plain istio.io/dataplane-mode=ambient`: the ztunnel learns
    # it over xDS, opens its in-pod listeners, then asks the agent: no restart of the pod
    assert redirection_annotation(kubectl, "cni-plain", "app") == ""
    node.ztunnel_asks(sandbox.ip, True)
    assert sandbox.redirected()
    # served: annotated as istio-cni does (through pods/status, its only write)
    assert redirection_annotation(kubectl, "cni-plain", "app") == "enabled"
    node.ztunnel_asks(sandbox.ip, False)
    assert not sandbox.redirected()
    assert redirection_annotation(kubectl, "cni-plain", "app") == ""


def redirection_annotation(kubectl: Kubectl, namespace: str, name: str) -> str:
    jsonpath = r"jsonpath={.metadata.annotations.ambient\.istio\.io/redirection}"
    return kubectl("get", "pod", name, "-n", namespace, "-o", jsonpath).stdout


def test_add_is_refused_for_another_nodes_pod_a_stale_uid_and_a_missing_pod(
    node: Node, kubectl: Kubectl, sandbox: Sandbox
) -> None:
    kubectl("apply", "-f", "-", stdin=json.dumps(
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "cni-node-2"}}
    ))  # fmt: skip
    uid = pod(kubectl, "cni-mesh", "elsewhere", node="cni-node-2")
    status, out, _ = add(node, sandbox, "cni-mesh", "elsewhere", uid)
    assert status == 1 and out["code"] == AGENT_REFUSED
    assert "bound to node 'cni-node-2'" in out["msg"] and "cni-mesh/elsewhere" in out["msg"]
    uid = pod(kubectl, "cni-mesh", "renewed")
    status, out, _ = add(node, sandbox, "cni-mesh", "renewed", "0000-stale")
    assert status == 1 and f"is now uid {uid}, not 0000-stale" in out["msg"]
    status, out, _ = add(node, sandbox, "cni-mesh", "never-made", "")
    assert status == 1 and "does not exist" in out["msg"]
    assert sandbox.ip not in node.ztunnel_view()["pods"]
    kubectl("delete", "node", "cni-node-2", "--wait=false", check=False)


def test_the_hosts_own_namespace_is_never_taken_for_a_pods(
    node: Node, kubectl: Kubectl, sandbox: Sandbox
) -> None:
    host = f"cni-host-{uuid.uuid4().hex[:6]}"
    sh("ip", "netns", "attach", host, str(node.process.pid if node.process else 0))
    try:
        uid = pod(kubectl, "cni-mesh", "sneaky")
        fake = Sandbox(host, sandbox.ip)
        status, out, _ = add(node, fake, "cni-mesh", "sneaky", uid)
    finally:
        sh("ip", "netns", "delete", host, check=False)
    assert status == 1 and out["code"] == AGENT_REFUSED
    assert "own (the host's) network namespace" in out["msg"]


def test_check_and_del_change_nothing_and_a_removed_namespace_is_forgotten(
    node: Node, kubectl: Kubectl, sandbox: Sandbox
) -> None:
    uid = pod(kubectl, "cni-mesh", "leaving")
    assert add(node, sandbox, "cni-mesh", "leaving", uid)[0] == 0
    rules = sandbox.rules()
    env = {"CNI_CONTAINERID": "x", "CNI_NETNS": sandbox.path, "CNI_IFNAME": "eth0"}
    checked = runtime_config(
        json.loads(node.conflist.read_text()), "ambient-cni", sandbox.prev_result()
    )
    assert invoke_plugin(node.plugin, "CHECK", checked, env) == (0, None, "")
    config = runtime_config(json.loads(node.conflist.read_text()), "ambient-cni", None)
    assert invoke_plugin(node.plugin, "DEL", config, env) == (0, None, "")
    assert sandbox.rules() == rules
    view = node.ztunnel_view()
    assert sandbox.ip in view["pods"] and sandbox.redirected()  # the sandbox still exists
    sandbox.remove()  # the runtime deletes the namespace after DEL
    deadline = time.monotonic() + 20
    while sandbox.ip in view["pods"]:  # long poll: answered when the agent's list changes
        assert time.monotonic() < deadline, node.tail()
        view = node.ztunnel_view(view["generation"])
    assert sandbox.ip not in node.saved()


def test_a_restarted_agent_keeps_its_pods_and_add_waits_for_it(
    node: Node, kubectl: Kubectl, sandbox: Sandbox
) -> None:
    uid = pod(kubectl, "cni-mesh", "survivor")
    assert add(node, sandbox, "cni-mesh", "survivor", uid)[0] == 0
    node.stop()
    try:
        assert node.conflist_plugins()[-1]["type"] == "ambient-cni"  # left in place
        status, out, _ = add(node, sandbox, "cni-mesh", "survivor", uid)
        assert status == 1 and out["code"] == TRY_AGAIN_LATER  # fail closed, retried later
    finally:
        node.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not node.ztunnel_socket.exists() or not _listing_has(node, sandbox.ip):
        assert time.monotonic() < deadline, node.tail()
        time.sleep(0.05)
    assert sandbox.redirected()
    assert node.ztunnel_view()["pods"][sandbox.ip]["name"] == "survivor"
    assert add(node, sandbox, "cni-mesh", "survivor", uid)[0] == 0


def _listing_has(node: Node, ip: str) -> bool:
    try:
        return ip in node.ztunnel_view()["pods"]
    except (subprocess.CalledProcessError, ValueError):
        return False


def test_an_agent_stopped_as_its_daemonset_goes_removes_the_plugin(
    node: Node, kubectl: Kubectl
) -> None:
    """Uninstall (last: the agent stays stopped): once its DaemonSet is gone, a stopping
    agent takes its entry out of the chain and deletes the executable."""
    kubectl("delete", "ds", NODE_AGENT, "-n", "istio-system", "--wait=true")
    node.stop()
    assert [p["type"] for p in node.conflist_plugins()] == ["bridge", "portmap"]
    assert not node.plugin.exists()
