"""A container's argv, environment and folder, from ``PodRun`` and the container spec."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from ambient.config.frozen import FrozenMap
from ambient.config.resources import (
    Container,
    EnvVar,
    ObjectMeta,
    Pod,
    PodSpec,
    PodStatus,
)
from ambient.runtime.spec import (
    PodRun,
    PodSpecError,
    container_argv,
    container_env,
    inherited_env,
    plan_launch,
    pod_env,
    resolve_field_path,
)

INHERITED = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/home/dev",
    "ALL_PROXY": "socks5://corp:1080",
    "https_proxy": "http://corp:3128",
    "No_Proxy": "localhost",
    "GRPC_PROXY": "x",
    "POD_IP": "stale",
}


def make_pod(*containers: Container, **changes: object) -> PodRun:
    fields: dict[str, object] = {
        "namespace": "shop",
        "name": "web-1",
        "uid": "uid-123",
        "ip": "127.10.0.5",
        "containers": containers,
        "node": "node-2",
        "service_account": "web",
        "labels": {"app": "web", "version": "v1"},
        "annotations": {"team": "blue"},
        "proxy": "socks5h://127.10.0.5:15080",
        "base_dir": Path("/tmp"),
        "host_ip": "127.0.0.1",
    }
    fields.update(changes)
    return PodRun(**fields)  # type: ignore[arg-type]


def test_pod_run_normalises_mappings_and_paths() -> None:
    pod = make_pod(Container("app", command=("true",)), base_dir=Path("relative"))
    assert isinstance(pod.labels, FrozenMap)
    assert isinstance(pod.extra_env, FrozenMap)
    assert pod.base_dir == Path.cwd() / "relative"
    assert pod.key == ("shop", "web-1")
    hash(pod)


def test_from_pod() -> None:
    pod = Pod(
        ObjectMeta("web", "shop", labels=FrozenMap({"app": "web"})),
        PodSpec((Container("app", command=("true",)),), "sa", "node-3"),
        PodStatus(pod_ip="127.10.0.9", host_ip="127.0.0.2"),
    )
    run = PodRun.from_pod(pod, uid="u", base_dir=Path("/srv"))
    assert (run.namespace, run.name, run.ip, run.host_ip) == (
        "shop",
        "web",
        "127.10.0.9",
        "127.0.0.2",
    )
    assert (run.node, run.service_account, run.proxy) == ("node-3", "sa", None)
    assert run.labels == {"app": "web"}
    assert PodRun.from_pod(pod, uid="u", base_dir=Path("/"), ip="127.10.0.1").ip == "127.10.0.1"
    bare = Pod(ObjectMeta("web", "shop"), PodSpec(()))
    with pytest.raises(ValueError, match="no IP"):
        PodRun.from_pod(bare, uid="u", base_dir=Path("/"))


def test_inherited_env_drops_every_proxy_variable() -> None:
    assert inherited_env(INHERITED) == {
        "PATH": "/usr/bin:/bin",
        "HOME": "/home/dev",
        "POD_IP": "stale",
    }
    assert inherited_env() == {
        k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")
    }


def test_pod_env_enrolled_and_not() -> None:
    pod = make_pod(extra_env={"EXTRA": "1", "NODE_NAME": "overridden"})
    assert pod_env(pod) == {
        "POD_IP": "127.10.0.5",
        "POD_NAME": "web-1",
        "POD_NAMESPACE": "shop",
        "SERVICE_ACCOUNT": "web",
        "NODE_NAME": "overridden",
        "ALL_PROXY": "socks5h://127.10.0.5:15080",
        "all_proxy": "socks5h://127.10.0.5:15080",
        "EXTRA": "1",
    }
    assert "ALL_PROXY" not in pod_env(make_pod(proxy=None))


def test_pod_env_with_the_connect_proxy() -> None:
    """Local mode's HTTP CONNECT port, named where gRPC (grpc core, grpc-go, grpc-java), Go's
    net/http and curl look for it; no HTTP_PROXY (absolute-form proxying is not served)."""
    pod = replace(make_pod(), connect_proxy="http://127.10.0.5:15081")
    env = pod_env(pod)
    connect = {k: v for k, v in env.items() if "proxy" in k.lower() and "all" not in k.lower()}
    assert connect == {
        "HTTPS_PROXY": "http://127.10.0.5:15081",
        "https_proxy": "http://127.10.0.5:15081",
        "grpc_proxy": "http://127.10.0.5:15081",
        "GRPC_PROXY_EXP": "127.10.0.5:15081",
        "NO_PROXY": "localhost",
        "no_proxy": "localhost",
    }
    assert "HTTP_PROXY" not in env and "http_proxy" not in env


def test_container_env_layers_and_expansion() -> None:
    container = Container(
        "app",
        env=(
            EnvVar("A", "a"),
            EnvVar("REF", "$(A)-$(POD_IP)-$$(A)-$(MISSING)-$(HOME)"),
            EnvVar("FWD", "$(LATER)"),
            EnvVar("LATER", "later"),
            EnvVar("ME", field_path="metadata.name"),
            EnvVar("NODE_NAME", "mine"),
            EnvVar("NO_PROXY", "example.com"),
            EnvVar("EMPTY"),
            EnvVar("A", "again-$(A)"),
        ),
    )
    env = container_env(make_pod(container), container, inherited=INHERITED)
    assert env == {
        "PATH": "/usr/bin:/bin",
        "HOME": "/home/dev",
        "POD_IP": "127.10.0.5",
        "POD_NAME": "web-1",
        "POD_NAMESPACE": "shop",
        "SERVICE_ACCOUNT": "web",
        "NODE_NAME": "mine",
        "ALL_PROXY": "socks5h://127.10.0.5:15080",
        "all_proxy": "socks5h://127.10.0.5:15080",
        "A": "again-a",
        "REF": "a-127.10.0.5-$(A)-$(MISSING)-$(HOME)",
        "FWD": "$(LATER)",
        "LATER": "later",
        "ME": "web-1",
        "NO_PROXY": "example.com",
        "EMPTY": "",
    }


def test_field_ref_values_are_not_expanded() -> None:
    container = Container(
        "app", env=(EnvVar("X", "x"), EnvVar("ANN", field_path="metadata.annotations['t']"))
    )
    pod = make_pod(container, annotations={"t": "$(X)"})
    assert container_env(pod, container, inherited={})["ANN"] == "$(X)"


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("metadata.name", "web-1"),
        ("metadata.namespace", "shop"),
        ("metadata.uid", "uid-123"),
        ("metadata.labels['app']", "web"),
        ("metadata.labels['missing']", ""),
        ("metadata.annotations['team']", "blue"),
        ("metadata.labels", 'app="web"\nversion="v1"'),
        ("metadata.annotations", 'team="blue"'),
        ("spec.nodeName", "node-2"),
        ("spec.serviceAccountName", "web"),
        ("status.podIP", "127.10.0.5"),
        ("status.podIPs", "127.10.0.5"),
        ("status.hostIP", "127.0.0.1"),
    ],
)
def test_field_paths(path: str, value: str) -> None:
    assert resolve_field_path(make_pod(), path) == value


@pytest.mark.parametrize(
    "path", ["spec.containers", "metadata.labels[app]", "['x']", "status.phase"]
)
def test_unsupported_field_path(path: str) -> None:
    container = Container("app", command=("true",), env=(EnvVar("X", field_path=path),))
    with pytest.raises(PodSpecError, match=r"pod shop/web-1, container 'app': env X: .*fieldPath"):
        container_env(make_pod(container), container)


def test_argv_expansion_uses_declared_variables_only() -> None:
    container = Container(
        "app",
        command=("server", "--ip=$(POD_IP)"),
        args=("$(GREETING)", "$$(GREETING)", "$(HOME)", "$(UNKNOWN)"),
        env=(EnvVar("GREETING", "hi $(POD_NAME)"),),
    )
    assert container_argv(make_pod(container), container) == (
        "server",
        "--ip=127.10.0.5",
        "hi web-1",
        "$(GREETING)",
        "$(HOME)",
        "$(UNKNOWN)",
    )


def test_args_alone_are_the_argv() -> None:
    container = Container("app", args=("echo", "$(POD_NAMESPACE)"))
    assert container_argv(make_pod(container), container) == ("echo", "shop")


def test_no_command_is_an_error() -> None:
    container = Container("app", image="nginx")
    with pytest.raises(PodSpecError, match="container 'app': no command") as info:
        container_argv(make_pod(container), container)
    assert (info.value.namespace, info.value.pod, info.value.container) == ("shop", "web-1", "app")


def test_plan_launch(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    script = tmp_path / "sub" / "run.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    container = Container("app", command=("./run.sh", "$(POD_IP)"), working_dir="sub")
    launch = plan_launch(make_pod(container, base_dir=tmp_path), container, inherited=INHERITED)
    assert launch.argv == ("./run.sh", "127.10.0.5")
    assert launch.cwd == tmp_path / "sub"
    assert launch.env["PATH"] == "/usr/bin:/bin"

    on_path = Container("app", command=("sh", "-c", "true"))
    assert plan_launch(make_pod(on_path, base_dir=tmp_path), on_path).cwd == tmp_path

    absolute = Container("app", command=("sh",), working_dir=str(tmp_path / "sub"))
    assert plan_launch(make_pod(absolute), absolute).cwd == tmp_path / "sub"


@pytest.mark.parametrize(
    ("container", "message"),
    [
        (
            Container("app", command=("sh",), working_dir="nope"),
            "working directory .*nope does not exist",
        ),
        (
            Container("app", command=("no-such-program-xyz",)),
            "command 'no-such-program-xyz' not found on PATH",
        ),
        (
            Container("app", command=("./missing.sh",)),
            "command './missing.sh' is not an executable file",
        ),
        (
            Container("app", command=("./data.txt",)),
            "command './data.txt' is not an executable file",
        ),
    ],
)
def test_plan_launch_errors(tmp_path: Path, container: Container, message: str) -> None:
    (tmp_path / "data.txt").write_text("not a program")
    with pytest.raises(PodSpecError, match=f"pod shop/web-1, container 'app': {message}"):
        plan_launch(make_pod(container, base_dir=tmp_path), container)
