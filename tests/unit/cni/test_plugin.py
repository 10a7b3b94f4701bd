"""ambient-cni exec'd as a runtime execs it: the CNI contract's answers, its errors, fail closed.

The agent's side here is the real ``PluginEventServer`` with a handler of the test's
(no namespaces: the kube e2e test, ``tests/kube/test_cni.py``, runs the whole path).
"""

from __future__ import annotations

import ast
import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

from ambient.cni import plugin
from ambient.nodeagent.pluginevents import PluginEventServer, PodEvent, Refused
from tests.unit.cni.conftest import Invoke

PREV = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/cni-1"}],
    "ips": [{"address": "10.244.1.7/24", "gateway": "10.244.1.1", "interface": 0}],
}
POD_ENV = {
    "CNI_CONTAINERID": "c0ffee",
    "CNI_NETNS": "/var/run/netns/cni-1",
    "CNI_IFNAME": "eth0",
    "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1;K8S_POD_UID=u-1",
}


def config(run_dir: Path | str = "/nonexistent", **extra: Any) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "type": "ambient-cni",
        "agent_run_dir": str(run_dir),
        "prevResult": PREV,
        **extra,
    }


def test_version_lists_the_spec_versions(invoke: Invoke) -> None:
    status, out, _ = invoke("VERSION", {"cniVersion": "1.0.0"})
    assert status == 0
    assert out == {"cniVersion": "1.1.0", "supportedVersions": list(plugin.SUPPORTED_VERSIONS)}


@pytest.mark.parametrize("command", ["DEL", "CHECK", "GC", "STATUS"])
def test_del_check_gc_status_answer_success_without_the_agent(invoke: Invoke, command: str) -> None:
    status, out, err = invoke(command, config(), POD_ENV)
    assert (status, out, err) == (0, None, "")


def test_add_of_a_non_kubernetes_sandbox_passes_prev_result_through(invoke: Invoke) -> None:
    env = {**POD_ENV, "CNI_ARGS": ""}
    status, out, _ = invoke("ADD", config(cniVersion="1.1.0"), env)
    assert status == 0
    assert out == {**PREV, "cniVersion": "1.1.0"}  # the configuration's version


def test_add_in_an_excluded_namespace_never_asks_the_agent(invoke: Invoke) -> None:
    status, out, _ = invoke("ADD", config(exclude_namespaces=["kube-system", "shop"]), POD_ENV)
    assert status == 0 and out == PREV


def test_add_fails_closed_when_the_agent_is_unreachable(invoke: Invoke, tmp_path: Path) -> None:
    status, out, err = invoke("ADD", config(tmp_path), POD_ENV)
    assert status == 1
    assert out["code"] == plugin.TRY_AGAIN_LATER and out["cniVersion"] == "1.0.0"
    assert str(tmp_path / "pluginevent.sock") in out["msg"]
    assert "node agent" in out["details"] and "cannot reach" in err


@pytest.mark.parametrize(
    ("command", "stdin", "env", "code", "words"),
    [
        ("ADD", b"{not json", POD_ENV, plugin.DECODING_FAILURE, "not JSON"),
        ("ADD", b"[1]", POD_ENV, plugin.DECODING_FAILURE, "not a JSON object"),
        ("ADD", {"cniVersion": "0.2.0"}, POD_ENV, plugin.INCOMPATIBLE_VERSION, "'0.2.0'"),
        ("CHECK", {"cniVersion": "2.0.0"}, POD_ENV, plugin.INCOMPATIBLE_VERSION, "'2.0.0'"),
        ("ADD", config(), {**POD_ENV, "CNI_NETNS": ""}, plugin.INVALID_ENVIRONMENT, "CNI_NETNS"),
        ("ADD", config(), {**POD_ENV, "CNI_ARGS": "X"}, plugin.INVALID_ENVIRONMENT, "KEY=VALUE"),
        ("ADD", config(agent_run_dir="relative"), POD_ENV, plugin.INVALID_CONFIG, "agent_run_dir"),
        ("ADD", config(exclude_namespaces="shop"), POD_ENV, plugin.INVALID_CONFIG, "exclude"),
        ("ADD", config(timeout_seconds=0), POD_ENV, plugin.INVALID_CONFIG, "timeout_seconds"),
        ("ADD", config(prevResult={"ips": [{}]}), POD_ENV, plugin.INVALID_CONFIG, "address"),
        ("NOPE", config(), POD_ENV, plugin.INVALID_ENVIRONMENT, "'NOPE'"),
    ],
)
def test_bad_input_is_the_specs_error_object(
    invoke: Invoke, command: str, stdin: Any, env: dict[str, str], code: int, words: str
) -> None:
    status, out, err = invoke(command, stdin, env)
    assert status == 1
    assert out["code"] == code and words in out["msg"], out
    assert set(out) <= {"cniVersion", "code", "msg", "details"}
    assert "Traceback" not in err


def test_an_oversized_configuration_is_refused(invoke: Invoke) -> None:
    status, out, _ = invoke("ADD", b" " * (plugin.MAX_CONFIG + 10), POD_ENV)
    assert status == 1 and out["code"] == plugin.DECODING_FAILURE


async def _serve(tmp_path: Path, handler: Any) -> PluginEventServer:
    server = PluginEventServer(handler)
    await server.start(tmp_path / "run")
    return server


async def test_add_hands_the_pod_to_the_agent_and_waits_for_its_answer(
    invoke: Invoke, tmp_path: Path
) -> None:
    seen: list[PodEvent] = []

    async def handler(event: PodEvent) -> dict[str, Any]:
        seen.append(event)
        return {"enrolled": True}

    server = await _serve(tmp_path, handler)
    try:
        status, out, err = await asyncio.to_thread(invoke, "ADD", config(tmp_path / "run"), POD_ENV)
    finally:
        await server.close()
    assert (status, out) == (0, PREV), err
    assert seen == [
        PodEvent("c0ffee", "/var/run/netns/cni-1", "eth0", "web-1", "shop", "u-1", ("10.244.1.7",))
    ]


@pytest.mark.parametrize(
    ("status", "code"), [(403, plugin.AGENT_REFUSED), (503, plugin.TRY_AGAIN_LATER)]
)
async def test_a_refusal_by_the_agent_fails_the_add_with_its_reason(
    invoke: Invoke, tmp_path: Path, status: int, code: int
) -> None:
    async def handler(event: PodEvent) -> dict[str, Any]:
        raise Refused(status, f"pod {event.pod} is bound to node 'other'")

    server = await _serve(tmp_path, handler)
    try:
        exit_status, out, _ = await asyncio.to_thread(
            invoke, "ADD", config(tmp_path / "run"), POD_ENV
        )
    finally:
        await server.close()
    assert exit_status == 1 and out["code"] == code
    assert "shop/web-1" in out["msg"] and "bound to node 'other'" in out["msg"]


def test_the_plugin_is_standard_library_python_38_syntax() -> None:
    """It runs with whatever python3 the node has: no third-party imports, old syntax."""
    source = Path(plugin.__file__).read_text()
    tree = ast.parse(source, feature_version=(3, 8))
    imported = {
        (n.module or "") if isinstance(n, ast.ImportFrom) else a.name
        for n in ast.walk(tree)
        if isinstance(n, ast.Import | ast.ImportFrom)
        for a in n.names
    }
    assert {m.split(".")[0] for m in imported} <= set(sys.stdlib_module_names) | {"__future__"}
