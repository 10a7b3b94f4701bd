"""securityContext: loaded strictly, merged as kubelet does, resolved to the ids a pod runs as."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ambient.config import ConfigError, load_text
from ambient.config.resources import Container, SecurityContext
from ambient.launcher.client import HostInfo
from ambient.runtime import PodRun
from ambient.runtime.security import (
    ContainerConfigError,
    effective_security_context,
    isolation_report,
    run_as,
)

ROOT = HostInfo(uid=0, gid=0, privileged=True, userns=True)
ROOT_NO_USERNS = HostInfo(uid=0, gid=0, privileged=True, userns=False, userns_error="EPERM")
USER = HostInfo(uid=1000, gid=1000, privileged=False, userns=True)
USER_NO_USERNS = HostInfo(uid=1000, gid=1000, privileged=False, userns=False, userns_error="no")

POD = """\
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: shop}
spec:
  securityContext: {runAsUser: 1000, runAsGroup: 3000, supplementalGroups: [4000],
                    fsGroup: 2000, seccompProfile: {type: RuntimeDefault}}
  containers:
  - name: a
    command: [run]
    securityContext: {runAsUser: 2000, runAsNonRoot: true,
                      capabilities: {drop: [ALL]}, allowPrivilegeEscalation: false}
  - name: b
    command: [run]
"""


def pod_run(pod_sc: SecurityContext | None, *containers: Container) -> PodRun:
    return PodRun(
        namespace="shop",
        name="web",
        uid="uid-1",
        ip="127.10.0.5",
        containers=containers,
        base_dir=Path("/"),
        security_context=pod_sc,
    )


def test_security_contexts_are_loaded_and_kubernetes_only_fields_ignored() -> None:
    (pod,) = load_text(POD).pods()
    assert pod.spec.security_context == SecurityContext(1000, 3000, None, (4000,))
    assert pod.spec.containers[0].security_context == SecurityContext(2000, None, True)
    assert pod.spec.containers[1].security_context is None


@pytest.mark.parametrize(
    ("snippet", "problem"),
    [
        ("runAsUser: -1", "runAsUser: must be between 0 and 2147483647, got -1"),
        ("runAsGroup: '7'", "runAsGroup: expected an integer"),
        ("runAsNonRoot: 'yes'", "runAsNonRoot: expected a boolean"),
        ("supplementalGroups: [1]", "supplementalGroups: unknown field"),
    ],
)
def test_bad_container_security_contexts_name_the_field(snippet: str, problem: str) -> None:
    text = textwrap.dedent(f"""\
        apiVersion: v1
        kind: Pod
        metadata: {{name: p}}
        spec:
          containers:
          - name: a
            command: [run]
            securityContext: {{{snippet}}}
        """)
    with pytest.raises(ConfigError) as info:
        load_text(text, "bad.yaml")
    (line,) = [str(p) for p in info.value.problems]
    assert "spec.containers[0].securityContext." + problem.split(":")[0] in line
    assert problem.split(": ", 1)[1] in line


def test_the_containers_fields_win_field_by_field() -> None:
    pod_sc = SecurityContext(run_as_user=1, run_as_group=2, run_as_non_root=True,
                             supplemental_groups=(5,))  # fmt: skip
    own = Container("a", command=("x",), security_context=SecurityContext(run_as_user=3))
    merged = effective_security_context(pod_run(pod_sc, own), own)
    assert merged == SecurityContext(3, 2, True, (5,))
    bare = Container("b", command=("x",))
    assert effective_security_context(pod_run(None, bare), bare) == SecurityContext()


def test_root_mesh_runs_pods_as_nobody_by_default() -> None:
    c = Container("a", command=("x",))
    user = run_as(pod_run(None, c), c, ROOT)
    assert (user.uid, user.gid, user.host_uid, user.host_gid) == (65534, 65534, 65534, 65534)
    assert user.groups == ()


def test_root_mesh_honours_run_as_user_group_and_supplemental_groups() -> None:
    c = Container("a", command=("x",), security_context=SecurityContext(run_as_group=4321))
    pod = pod_run(SecurityContext(run_as_user=1234, supplemental_groups=(7, 8)), c)
    user = run_as(pod, c, ROOT)
    assert (user.uid, user.gid, user.host_uid, user.host_gid) == (1234, 4321, 1234, 4321)
    assert user.groups == (7, 8)


def test_root_in_the_pod_is_nobody_on_the_host() -> None:
    c = Container("a", command=("x",), security_context=SecurityContext(run_as_user=0))
    user = run_as(pod_run(None, c), c, ROOT)
    assert (user.uid, user.gid, user.host_uid, user.host_gid) == (0, 0, 65534, 65534)
    assert user.home == "/root"
    with pytest.raises(ContainerConfigError, match="refuses user namespaces \\(EPERM\\)"):
        run_as(pod_run(None, c), c, ROOT_NO_USERNS)


def test_run_as_non_root_refuses_uid_0_with_kubelets_message() -> None:
    c = Container("app", command=("x",), security_context=SecurityContext(run_as_user=0))
    pod = pod_run(SecurityContext(run_as_non_root=True), c)
    for host in (ROOT, USER):
        with pytest.raises(ContainerConfigError) as info:
            run_as(pod, c, host)
        assert str(info.value) == (
            'container\'s runAsUser breaks non-root policy (pod: "web_shop(uid-1)", container: app)'
        )
        assert info.value.reason == "CreateContainerConfigError"
    # Without runAsUser the default is never root.
    plain = Container("app", command=("x",))
    assert run_as(pod_run(SecurityContext(run_as_non_root=True), plain), plain, ROOT).uid != 0


def test_an_unprivileged_mesh_maps_the_asked_ids_onto_its_own() -> None:
    c = Container("a", command=("x",), security_context=SecurityContext(run_as_user=42))
    user = run_as(pod_run(SecurityContext(supplemental_groups=(9,)), c), c, USER)
    assert (user.uid, user.gid, user.host_uid, user.host_gid) == (42, 1000, 1000, 1000)
    assert user.groups == ()  # setgroups is denied in an unprivileged user namespace
    plain = Container("b", command=("x",))
    same = run_as(pod_run(None, plain), plain, USER)
    assert (same.uid, same.gid, same.host_uid) == (1000, 1000, 1000)


def test_without_user_namespaces_only_the_meshs_own_ids_can_run() -> None:
    c = Container("a", command=("x",), security_context=SecurityContext(run_as_user=42))
    with pytest.raises(ContainerConfigError, match="asks for runAsUser 42"):
        run_as(pod_run(None, c), c, USER_NO_USERNS)
    mine = Container("a", command=("x",), security_context=SecurityContext(run_as_user=1000))
    assert run_as(pod_run(None, mine), mine, USER_NO_USERNS).uid == 1000


def test_the_report_is_loud_when_pods_can_read_the_keys() -> None:
    assert isolation_report(ROOT)[0] and isolation_report(USER)[0]
    secure, text = isolation_report(USER_NO_USERNS)
    assert not secure and "CAN READ THE MESH'S KEYS" in text


def test_a_privileged_container_runs_as_the_mesh_itself() -> None:
    c = Container("a", command=("x",), security_context=SecurityContext(privileged=True))
    root = run_as(pod_run(None, c), c, ROOT)
    assert (root.uid, root.gid, root.host_uid, root.host_gid) == (0, 0, 0, 0)
    mine = run_as(pod_run(None, c), c, USER)
    assert (mine.uid, mine.host_uid) == (1000, 1000)
    other = Container(
        "b", command=("x",), security_context=SecurityContext(privileged=True, run_as_user=5)
    )
    assert run_as(pod_run(None, other), other, ROOT).host_uid == 5
    with pytest.raises(ContainerConfigError, match="is privileged and asks for uid 5"):
        run_as(pod_run(None, other), other, USER)
    guarded = pod_run(SecurityContext(run_as_non_root=True), c)
    with pytest.raises(ContainerConfigError, match="has runAsNonRoot and image will run as root"):
        run_as(guarded, c, ROOT)
    (pod,) = load_text(
        "kind: Pod\napiVersion: v1\nmetadata: {name: p}\nspec: {containers: [{name: c, "
        "command: [run], securityContext: {privileged: true}}]}\n"
    ).pods()
    assert pod.spec.containers[0].security_context == SecurityContext(privileged=True)
