"""``ambient install --profile ambient``: the mesh's Deployment, Service and DaemonSets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner

from ambient.cli.main import cli
from ambient.install.manifests import mesh_objects
from ambient.install.workloads import (
    CONTROL_PLANE,
    DEFAULT_IMAGE,
    NODE_AGENT,
    ZTUNNEL,
    workload_objects,
)
from ambient.kube import rootcert
from ambient.kubelet.ztunnel import ZtunnelConfig, ztunnel_pod
from tests.containers import container_argv, only_container, pod_template

FIELDS = {
    "spec.nodeName": "node-1",
    "status.podIP": "10.244.1.5",
    "metadata.name": "pod-abc",
    "metadata.namespace": "istio-system",
    "spec.serviceAccountName": "sa",
}


def _by(kind: str, name: str, objects: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return next(
        o
        for o in (objects or workload_objects())
        if o["kind"] == kind and o["metadata"]["name"] == name
    )


def _mounts(obj: dict[str, Any], tmp_path: Path) -> dict[str, Path]:
    """Each mount point of the only container → a folder of the test's, with the files a
    kubelet would put there (the projected token, the root ConfigMap's key)."""
    local = {}
    for mount in only_container(obj)["volumeMounts"]:
        folder = tmp_path / mount["name"]
        folder.mkdir(exist_ok=True)
        local[mount["mountPath"]] = folder
    for name in ("istio-token", "istiod-ca-cert"):
        if (tmp_path / name).is_dir():
            (tmp_path / name / ("root-cert.pem" if name == "istiod-ca-cert" else name)).touch()
    return local


def _parse(argv: list[str], env: dict[str, str]) -> click.Context:
    """``argv`` parsed by the ``ambient`` command as it would be run (options, types,
    required values, files that must exist), without running it."""
    assert argv[0] == "ambient", argv
    root = cli.make_context("ambient", argv[1:], resilient_parsing=False)
    command = cli.get_command(root, argv[1])
    assert command is not None, f"no command {argv[1]}"
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        return command.make_context(argv[1], argv[2:], parent=root)


@pytest.mark.parametrize(
    ("kind", "name", "command"),
    [
        ("Deployment", CONTROL_PLANE, "controlplane"),
        ("DaemonSet", ZTUNNEL, "ztunnel"),
        ("DaemonSet", NODE_AGENT, "node-agent"),
    ],
)
def test_each_container_runs_an_ambient_command_that_parses(
    kind: str, name: str, command: str, tmp_path: Path
) -> None:
    obj = _by(kind, name)
    argv, env = container_argv(only_container(obj), FIELDS, _mounts(obj, tmp_path))
    assert argv[1] == command
    assert not [a for a in argv if "$(" in a], argv  # every reference is defined
    parsed = _parse(argv, env)
    if command != "controlplane":
        assert parsed.params["node" if command == "node-agent" else "node_name"] == "node-1"


def test_ztunnel_and_node_agent_meet_on_the_same_host_paths() -> None:
    """Namespace paths and the agent's socket go between the two DaemonSets (and the
    plugin), so each must be the host's path, mounted at the same place in both."""
    ztunnel, agent = _by("DaemonSet", ZTUNNEL), _by("DaemonSet", NODE_AGENT)

    def host_mounts(obj: dict[str, Any]) -> dict[str, str]:
        volumes = {v["name"]: v for v in pod_template(obj)["volumes"]}
        found = {}
        for mount in only_container(obj)["volumeMounts"]:
            volume = volumes[mount["name"]]  # every mount names a volume of the pod
            if "hostPath" in volume:
                found[volume["hostPath"]["path"]] = mount["mountPath"]
        return found

    z, a = host_mounts(ztunnel), host_mounts(agent)
    for shared in ("/var/run/netns", "/var/run/ztunnel"):
        assert z[shared] == a[shared] == shared
    assert a["/var/run/ambient/cni"] == "/var/run/ambient/cni"  # what the plugin is told
    assert a["/opt/cni/bin"] == "/host/opt/cni/bin" and a["/etc/cni/net.d"] == "/host/etc/cni/net.d"
    z_args, a_args = only_container(ztunnel)["args"], only_container(agent)["args"]
    socket = z_args[z_args.index("--node-agent-socket") + 1]
    assert socket == a_args[a_args.index("--ztunnel-socket") + 1]
    assert pod_template(agent)["hostNetwork"] is True
    assert "hostNetwork" not in pod_template(ztunnel)  # its own pod network, as Istio's


def test_the_mesh_never_captures_itself() -> None:
    for obj in workload_objects():
        if obj["kind"] in ("Deployment", "DaemonSet"):
            labels = obj["spec"]["template"]["metadata"]["labels"]
            assert labels["istio.io/dataplane-mode"] == "none", obj["metadata"]["name"]
            assert obj["metadata"]["namespace"] == "istio-system"
    args = only_container(_by("DaemonSet", NODE_AGENT))["args"]
    excluded = {args[i + 1] for i, a in enumerate(args) if a == "--exclude-namespace"}
    assert excluded == {"kube-system", "istio-system"}


def test_ztunnel_proves_its_node_with_a_pod_bound_istio_ca_token() -> None:
    ztunnel = _by("DaemonSet", ZTUNNEL)
    volumes = {v["name"]: v for v in pod_template(ztunnel)["volumes"]}
    (source,) = volumes["istio-token"]["projected"]["sources"]
    assert source["serviceAccountToken"]["audience"] == "istio-ca"
    assert volumes["istiod-ca-cert"]["configMap"]["name"] == "istio-ca-root-cert"
    assert pod_template(ztunnel)["serviceAccountName"] == "ztunnel"
    args = only_container(ztunnel)["args"]
    assert args[args.index("--control-plane") + 1] == "istiod.istio-system.svc:15012"


def test_control_plane_is_one_unprivileged_replica_with_its_keys_on_a_volume() -> None:
    deployment = _by("Deployment", CONTROL_PLANE)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = pod_template(deployment)
    assert pod["securityContext"]["runAsUser"] != 0
    state = next(v for v in pod["volumes"] if v["name"] == "state")
    claim = _by("PersistentVolumeClaim", state["persistentVolumeClaim"]["claimName"])
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    service = _by("Service", CONTROL_PLANE)
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert {p["port"] for p in service["spec"]["ports"]} == {15010, 15012}


def _dry_run(*args: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(cli, ["install", "--dry-run", *args])
    assert result.exit_code == 0, result.output
    return list(yaml.load_all(result.stdout, Loader=yaml.CSafeLoader))


def test_the_ambient_profile_adds_the_workloads_after_the_rest() -> None:
    default, ambient = _dry_run(), _dry_run("--profile", "ambient", "--image", "reg/ambient:1")
    added = ambient[len(default) :]
    assert ambient[: len(default)] == default
    assert [(o["kind"], o["metadata"]["name"]) for o in added] == [
        ("PersistentVolumeClaim", "istiod-state"),
        ("Deployment", "istiod"),
        ("Service", "istiod"),
        ("DaemonSet", "ztunnel"),
        ("DaemonSet", "istio-cni-node"),
    ]
    images = {
        only_container(o)["image"]
        for o in added
        if o["kind"] != "Service" and "template" in o["spec"]
    }
    assert images == {"reg/ambient:1"}
    assert not [o for o in default if o["kind"] in ("Deployment", "DaemonSet")]
    assert DEFAULT_IMAGE.startswith("ambient:")


def test_image_without_the_ambient_profile_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["install", "--dry-run", "--image", "x"])
    assert result.exit_code == 2
    assert "--image and --log-level go with --profile ambient" in result.output


def test_uninstall_removes_the_workloads_first() -> None:
    result = CliRunner().invoke(cli, ["uninstall", "--dry-run"])
    assert result.exit_code == 0, result.output
    docs = list(yaml.load_all(result.stdout, Loader=yaml.CSafeLoader))
    first = [(o["kind"], o["metadata"]["name"]) for o in docs[:5]]
    assert first[:2] == [("DaemonSet", "istio-cni-node"), ("DaemonSet", "ztunnel")]
    # the RBAC the node agents need while they stop comes after them
    names = [(o["kind"], o["metadata"]["name"]) for o in docs]
    assert names.index(("Role", "ambient-istio-cni")) > names.index(("DaemonSet", NODE_AGENT))
    assert len(docs) > len(mesh_objects())


def test_ztunnel_mounts_the_root_the_control_plane_publishes() -> None:
    """The ConfigMap volume and the file ztunnel reads are what ``kube.rootcert`` writes."""
    ztunnel = _by("DaemonSet", ZTUNNEL)
    volumes = {v["name"]: v for v in pod_template(ztunnel)["volumes"]}
    assert volumes["istiod-ca-cert"]["configMap"]["name"] == rootcert.NAME
    assert rootcert.NAMESPACE == "istio-system"
    args = only_container(ztunnel)["args"]
    assert args[args.index("--ca-root") + 1].endswith("/" + rootcert.KEY)


def _flags(args: list[str]) -> list[str]:
    return [a for a in args if a.startswith("--")]


def test_ztunnel_daemonset_runs_the_dev_nodes_ztunnel_command() -> None:
    """The DaemonSet's container is the ztunnel pod ``ambient up --kubeconfig --netns``
    makes on each dev node: the same command, options, downward-API references, ports and
    readiness; only the files' and the control plane's places differ."""
    dev = ztunnel_pod(
        "node-1",
        "uid-1",
        ZtunnelConfig(
            "10.0.0.1:15012",
            "10.0.0.1:15010",
            Path("/state/ztunnel"),
            node_agent_socket=Path("/state/nodeagent.sock"),
        ),
    )
    (dev_container,) = dev["spec"]["containers"]
    container = only_container(_by("DaemonSet", ZTUNNEL))
    assert dev_container["command"][-1] == container["command"][-1] == "ambient"
    assert _flags(dev_container["args"]) == _flags(container["args"])
    for flag in ("--node", "--node-ip"):
        i, j = dev_container["args"].index(flag), container["args"].index(flag)
        assert dev_container["args"][i + 1] == container["args"][j + 1]  # $(NODE_NAME), $(POD_IP)
    assert {e["name"] for e in dev_container["env"]} <= {e["name"] for e in container["env"]}
    assert dev_container["readinessProbe"]["httpGet"] == container["readinessProbe"]["httpGet"]
    assert {p["containerPort"] for p in dev_container["ports"]} == {
        p["containerPort"] for p in container["ports"]
    }
    assert dev_container["name"] == container["name"]
    template = _by("DaemonSet", ZTUNNEL)["spec"]["template"]
    assert dev["metadata"]["labels"].items() <= template["metadata"]["labels"].items()
    assert dev["spec"]["serviceAccountName"] == template["spec"]["serviceAccountName"]


def test_lightkube_applies_every_field_the_server_dry_run_checked() -> None:
    """``ambient install`` applies through lightkube's typed models; the server dry run
    (tests/kube/test_install.py) checks the YAML. A field the models do not know would be
    dropped between the two: every object must come back from them unchanged."""
    from lightkube import codecs

    import ambient.install.apply  # noqa: F401  (registers GatewayClass with lightkube)

    for obj in mesh_objects() + workload_objects():
        model: Any = codecs.from_dict(obj)
        assert model.to_dict() == obj, (obj["kind"], obj["metadata"]["name"])
