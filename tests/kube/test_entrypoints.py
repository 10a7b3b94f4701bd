"""The ambient profile's three containers, run as a kubelet would run them on one node.

No container runtime here, so each container of ``ambient install --profile ambient``
(the control plane Deployment, the node-agent and ztunnel DaemonSets) runs as a
process of this host with exactly its manifest's command line, resolved as a kubelet
resolves it: ``$(VAR)`` from the downward API, each mount point standing for a folder
of the test's (``tests/containers.py``). What the cluster would provide is provided by
hand, and only that:

- the pods' credentials: the ``istiod`` and ``istio-cni`` accounts' tokens in a
  kubeconfig (in a pod: the in-cluster account), ztunnel's projected ``istio-token``
  (a TokenRequest bound to its pod, audience ``istio-ca``), and the ConfigMap
  ``istio-ca-root-cert`` that the control plane publishes, as its volume would hold it;
- the Service: ``istiod.istio-system.svc:15012`` and ``:15010`` in ztunnel's command
  line become the control plane's address, and its ports are free ones in place of
  15012/15010 (this machine runs other meshes); the TLS name checked stays the
  Service's;
- the host's CNI folders and the sandbox: a bridge ``.conflist``, a network namespace
  and veth made by the test, and the installed ``ambient-cni`` exec'd as containerd
  does.

Each container's readiness probe is then evaluated as declared, and one enrolled pod
goes the whole way: CNI ``ADD`` → node agent (redirection before the pod starts) → the
pod's IP in the API server (the kubelet's part) → the control plane's xDS → ztunnel
opens its listeners in the pod's namespace → asks the agent → the pod is annotated
``ambient.istio.io/redirection: enabled``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ambient.devcluster import DevCluster
from ambient.install.workloads import (
    CONTROL_PLANE,
    DEFAULT_IMAGE,
    NODE_AGENT,
    ROOT_CONFIGMAP,
    ZTUNNEL,
    workload_objects,
)
from tests.cni import HOST_PYTHON, invoke_plugin, runtime_config
from tests.containers import container_argv, only_container
from tests.kube.conftest import Kubectl
from tests.kube.controlplane.conftest import ambient, service_account_kubeconfig
from tests.kube.test_cni import BRIDGE_LIST, Sandbox
from tests.netns.conftest import netns_unavailable

pytestmark = [pytest.mark.slow, pytest.mark.kube, pytest.mark.root]

NODE = "entrypoint-node-1"
ZTUNNEL_POD = f"{ZTUNNEL}-entry"
ZTUNNEL_IP = f"127.79.{os.getpid() % 250}.1"
READY_TIMEOUT = 90.0
NAMESPACE = "entry-mesh"
LATER = "entry-later"


@pytest.fixture(scope="module", autouse=True)
def _needs_netns() -> None:
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(f"the profile's containers as processes: {reason}")
    if not Path(HOST_PYTHON).is_file():
        pytest.skip(f"the plugin runs with the node's python3: {HOST_PYTHON} is missing")


def _workload(name: str) -> dict[str, Any]:
    return next(
        o for o in workload_objects() if o["metadata"]["name"] == name and o["kind"] != "Service"
    )


@dataclass
class Container:
    """One container of the profile, running as a process."""

    name: str
    spec: dict[str, Any]
    argv: list[str]
    env: dict[str, str]
    mounts: dict[str, Path]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    ports: dict[int, int] = field(default_factory=dict)  # declared → actual

    def start(self) -> None:
        assert self.argv[0] == "ambient", self.argv
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                ["setpriv", "--pdeathsig", "TERM", "--", sys.executable, "-m", *self.argv],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
            )  # fmt: skip

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def tail(self) -> str:
        return f"--- {self.name}:\n" + self.log.read_text(errors="replace")[-3000:]

    def ready(self, host: str) -> bool:
        """Its readinessProbe, evaluated as a kubelet would (declared ports mapped)."""
        probe = self.spec["readinessProbe"]
        if "exec" in probe:
            argv = [self._path(a) for a in probe["exec"]["command"]]
            return subprocess.run(argv, check=False, timeout=10).returncode == 0
        if "tcpSocket" in probe:
            port = self.ports.get(probe["tcpSocket"]["port"], probe["tcpSocket"]["port"])
            try:
                socket.create_connection((host, port), timeout=2).close()
                return True
            except OSError:
                return False
        get = probe["httpGet"]
        url = f"http://{host}:{get['port']}{get['path']}"
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                status: int = answer.status
        except OSError:
            return False
        return 200 <= status < 400

    def _path(self, arg: str) -> str:
        for point, local in self.mounts.items():
            if arg.startswith(point + "/"):
                return str(local) + arg[len(point) :]
        return arg


def _container(
    obj: dict[str, Any], fields: dict[str, str], mounts: dict[str, Path], log: Path
) -> Container:
    spec = only_container(obj)
    argv, env = container_argv(spec, fields, mounts)
    return Container(obj["metadata"]["name"], spec, argv, env, mounts, log)


def _fields(pod: str, ip: str, account: str) -> dict[str, str]:
    return {"spec.nodeName": NODE, "status.podIP": ip, "metadata.name": pod,
            "metadata.namespace": "istio-system", "spec.serviceAccountName": account}  # fmt: skip


def _folders(root: Path, obj: dict[str, Any], fixed: dict[str, Path]) -> dict[str, Path]:
    """Each mount point → a folder of the test's (``fixed`` ones given)."""
    mounts = {}
    for mount in only_container(obj)["volumeMounts"]:
        point = mount["mountPath"]
        mounts[point] = fixed.get(point) or root / f"{obj['metadata']['name']}-{mount['name']}"
        mounts[point].mkdir(parents=True, exist_ok=True)
    return mounts


def _wait(what: str, ok: Any, containers: list[Container]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while not ok():
        for c in containers:
            assert c.process is not None
            if c.process.poll() is not None:
                pytest.fail(f"{c.name} exited while waiting for {what}\n{c.tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {READY_TIMEOUT:.0f} s\n" + "\n".join(
                c.tail() for c in containers))  # fmt: skip
        time.sleep(0.1)


@dataclass
class ProfileNode:
    control_plane: Container
    node_agent: Container
    ztunnel: Container
    conflist: Path
    plugin: Path

    @property
    def all(self) -> list[Container]:
        return [self.control_plane, self.node_agent, self.ztunnel]


@pytest.fixture(scope="module")
def profile_node(
    dev_cluster: DevCluster, kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProfileNode]:
    done = ambient("install", "--kubeconfig", str(dev_cluster.kubeconfig))
    assert done.returncode == 0, done.stderr
    root = tmp_path_factory.mktemp("profile-node")
    kubectl("apply", "-f", "-", stdin=json.dumps(
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}}
    ))  # fmt: skip
    netns = Path("/var/run/netns")
    shared = {"/var/run/ztunnel": root / "host-ztunnel", "/var/run/netns": netns}
    started: list[Container] = []
    try:
        # The control plane: its state on the "claim", the istiod account's token.
        deployment = _workload(CONTROL_PLANE)
        cp = _container(deployment, _fields("istiod-abc", "127.0.0.1", "istiod"),
                        _folders(root, deployment, {}), root / "controlplane.log")  # fmt: skip
        cp.argv = [a.replace(":15012", ":0").replace(":15010", ":0") for a in cp.argv]
        cp.env["KUBECONFIG"] = str(service_account_kubeconfig(
            dev_cluster, kubectl, root / "istiod.kubeconfig", "istiod"))  # fmt: skip
        cp.start()
        started.append(cp)
        info_file = cp.mounts["/var/lib/ambient"] / "controlplane.json"
        _wait("controlplane.json", info_file.exists, started)
        info = json.loads(info_file.read_text())
        ca_port = int(info["ca_address"].rpartition(":")[2])
        xds_port = int(info["xds_address"].rpartition(":")[2])
        cp.ports = {15012: ca_port, 15010: xds_port}

        # The node agent: the host's CNI folders, the istio-cni account's token.
        daemonset = _workload(NODE_AGENT)
        agent_mounts = _folders(root, daemonset, shared)
        conflist = agent_mounts["/host/etc/cni/net.d"] / "10-bridge.conflist"
        conflist.write_text(json.dumps(BRIDGE_LIST))
        agent = _container(daemonset, _fields(f"{NODE_AGENT}-abc", "127.0.0.1", "istio-cni"),
                           agent_mounts, root / "node-agent.log")  # fmt: skip
        agent.env["KUBECONFIG"] = str(service_account_kubeconfig(
            dev_cluster, kubectl, root / "istio-cni.kubeconfig", "istio-cni"))  # fmt: skip
        agent.start()
        started.append(agent)

        # ztunnel: its pod (as the DaemonSet controller and kubelet make it), its
        # projected token and the root ConfigMap's file.
        kubectl("apply", "-f", "-", stdin=json.dumps({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": ZTUNNEL_POD, "namespace": "istio-system",
                         "labels": {"app": "ztunnel"}},
            "spec": {"nodeName": NODE, "serviceAccountName": "ztunnel",
                     "containers": [{"name": "istio-proxy", "image": "ambient"}]},
        }))  # fmt: skip
        uid = kubectl("get", "pod", ZTUNNEL_POD, "-n", "istio-system", "-o",
                      "jsonpath={.metadata.uid}").stdout  # fmt: skip
        ds = _workload(ZTUNNEL)
        z_mounts = _folders(root, ds, shared)
        token = kubectl(
            "create", "token", "ztunnel", "-n", "istio-system", "--audience=istio-ca",
            "--bound-object-kind=Pod", f"--bound-object-name={ZTUNNEL_POD}",
            f"--bound-object-uid={uid}", "--duration=12h",
        ).stdout.strip()  # fmt: skip
        (z_mounts["/var/run/secrets/tokens"] / "istio-token").write_text(token)
        # the kubelet mounts the ConfigMap the control plane published (configMap volume)
        published = kubectl("get", "configmap", ROOT_CONFIGMAP, "-n", "istio-system",
                            "-o", "jsonpath={.data.root-cert\\.pem}").stdout  # fmt: skip
        assert published == Path(info["node_ca_root"]).read_text()
        (z_mounts["/var/run/secrets/istio"] / "root-cert.pem").write_text(published)
        zt = _container(ds, _fields(ZTUNNEL_POD, ZTUNNEL_IP, "ztunnel"), z_mounts,
                        root / "ztunnel.log")  # fmt: skip
        service = f"{CONTROL_PLANE}.istio-system.svc"
        zt.argv = [a.replace(f"{service}:15012", f"127.0.0.1:{ca_port}")
                   .replace(f"{service}:15010", f"127.0.0.1:{xds_port}") for a in zt.argv]  # fmt: skip
        zt.start()
        started.append(zt)
        node = ProfileNode(cp, agent, zt, conflist,
                           agent_mounts["/host/opt/cni/bin"] / "ambient-cni")  # fmt: skip
        yield node
    finally:
        for container in reversed(started):
            container.stop()
        kubectl("delete", "pod", ZTUNNEL_POD, "-n", "istio-system", "--grace-period=0",
                "--force", "--wait=false", check=False)  # fmt: skip
        kubectl("delete", "node", NODE, "--wait=false", check=False)
        kubectl("delete", "namespace", NAMESPACE, LATER, "--wait=false", check=False)


def test_each_container_becomes_ready_by_its_own_probe(profile_node: ProfileNode) -> None:
    _wait("the control plane's readiness (its CA port)",
          lambda: profile_node.control_plane.ready("127.0.0.1"), profile_node.all)  # fmt: skip
    _wait("the node agent's readiness (its plugin socket)",
          lambda: profile_node.node_agent.ready("127.0.0.1"), profile_node.all)  # fmt: skip
    _wait("ztunnel's readiness (/healthz/ready on its pod IP)",
          lambda: profile_node.ztunnel.ready(ZTUNNEL_IP), profile_node.all)  # fmt: skip
    plugins = json.loads(profile_node.conflist.read_text())["plugins"]
    assert plugins[-1]["type"] == "ambient-cni"
    assert plugins[-1]["exclude_namespaces"] == ["kube-system", "istio-system"]


def _annotation(kubectl: Kubectl, name: str, namespace: str = NAMESPACE) -> str:
    jsonpath = r"jsonpath={.metadata.annotations.ambient\.istio\.io/redirection}"
    return kubectl("get", "pod", name, "-n", namespace, "-o", jsonpath).stdout


def _sandbox_added(
    node: ProfileNode, kubectl: Kubectl, namespace: str, name: str, ip: str
) -> Sandbox:
    """Pod ``namespace/name`` bound to the node, its sandbox made and the plugin's ``ADD``
    run as containerd does; the caller removes the sandbox."""
    _wait("the node's readiness", lambda: node.ztunnel.ready(ZTUNNEL_IP)
          and node.node_agent.ready("127.0.0.1"), node.all)  # fmt: skip
    kubectl("create", "namespace", namespace, check=False)
    kubectl("apply", "-f", "-", stdin=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
        "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "app:1"}]},
    }))  # fmt: skip
    uid = kubectl("get", "pod", name, "-n", namespace, "-o", "jsonpath={.metadata.uid}").stdout
    sandbox = Sandbox(f"entry-{uuid.uuid4().hex[:8]}", ip)
    sandbox.make()
    config = runtime_config(json.loads(node.conflist.read_text()), "ambient-cni",
                            sandbox.prev_result())  # fmt: skip
    env = {
        "CNI_CONTAINERID": uuid.uuid4().hex, "CNI_NETNS": sandbox.path, "CNI_IFNAME": "eth0",
        "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};"
        f"K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID={uid}",
    }  # fmt: skip
    status, out, err = invoke_plugin(node.plugin, "ADD", config, env)
    if status != 0:
        sandbox.remove()
        pytest.fail(f"ADD {namespace}/{name}: {out} {err}\n{node.node_agent.tail()}")
    return sandbox


def _running(kubectl: Kubectl, namespace: str, name: str, ip: str) -> None:
    """What the kubelet reports once the sandbox has its address: IP, Running, Ready."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    kubectl("patch", "pod", name, "-n", namespace, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": {
                "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                "conditions": [{"type": t, "status": "True", "lastTransitionTime": now}
                               for t in ("Initialized", "ContainersReady", "Ready")]}}))  # fmt: skip


def _listening(sandbox: Sandbox) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", sandbox.name, "ss", "-ltnH"],
        capture_output=True, text=True, timeout=10, check=True,
    ).stdout  # fmt: skip


def test_an_enrolled_pod_goes_from_cni_add_to_served_by_ztunnel(
    profile_node: ProfileNode, kubectl: Kubectl
) -> None:
    kubectl("create", "namespace", NAMESPACE, check=False)
    kubectl("label", "namespace", NAMESPACE, "istio.io/dataplane-mode=ambient", "--overwrite")
    sandbox = _sandbox_added(profile_node, kubectl, NAMESPACE, "app", "10.99.1.201")
    try:
        assert sandbox.redirected()  # before the runtime would start the container
        assert _annotation(kubectl, "app") == ""  # captured, not served yet
        _running(kubectl, NAMESPACE, "app", sandbox.ip)  # the control plane pushes it
        _wait("ztunnel serving the pod (its annotation)",
              lambda: _annotation(kubectl, "app") == "enabled", profile_node.all)  # fmt: skip
        listening = _listening(sandbox)  # ztunnel's listeners, in the pod's own namespace
        assert ":15008" in listening and ":15001" in listening, listening
    finally:
        sandbox.remove()


def test_labelling_the_namespace_later_captures_a_running_pod_without_a_restart(
    profile_node: ProfileNode, kubectl: Kubectl
) -> None:
    """``kubectl label namespace ... istio.io/dataplane-mode=ambient`` on a running pod:
    the control plane pushes it, ztunnel opens its listeners in the pod's namespace and
    asks the agent for the redirection; the label's removal undoes both."""
    sandbox = _sandbox_added(profile_node, kubectl, LATER, "app", "10.99.1.202")
    try:
        _running(kubectl, LATER, "app", sandbox.ip)
        assert not sandbox.redirected() and _annotation(kubectl, "app", LATER) == ""
        kubectl("label", "namespace", LATER, "istio.io/dataplane-mode=ambient")
        _wait("ztunnel serving the pod once its namespace is labelled",
              lambda: _annotation(kubectl, "app", LATER) == "enabled", profile_node.all)  # fmt: skip
        assert sandbox.redirected() and ":15008" in _listening(sandbox)
        kubectl("label", "namespace", LATER, "istio.io/dataplane-mode-")
        _wait("the pod out of the mesh once the label is removed",
              lambda: _annotation(kubectl, "app", LATER) == "", profile_node.all)  # fmt: skip
        assert not sandbox.redirected()
    finally:
        sandbox.remove()


def test_the_control_planes_waypoints_run_the_profiles_image(
    profile_node: ProfileNode, kubectl: Kubectl
) -> None:
    """A waypoint's Deployment (made by the control plane) must be pullable where the
    mesh's own image is: the profile tells the control plane its image."""
    kubectl("create", "namespace", NAMESPACE, check=False)
    kubectl("apply", "-f", "-", stdin=json.dumps({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "waypoint", "namespace": NAMESPACE},
        "spec": {"gatewayClassName": "istio-waypoint",
                 "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]},
    }))  # fmt: skip
    image = ""

    def deployed() -> bool:
        nonlocal image
        image = kubectl("get", "deploy", "waypoint", "-n", NAMESPACE, "-o",
                        "jsonpath={.spec.template.spec.containers[0].image}",
                        check=False).stdout  # fmt: skip
        return image != ""

    _wait("the waypoint's Deployment", deployed, profile_node.all)
    assert image == DEFAULT_IMAGE
