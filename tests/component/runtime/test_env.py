"""A real container process sees exactly the environment and argv the spec promises."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from ambient.config.resources import EnvVar
from ambient.runtime import EventKind, Supervisor
from tests.component.runtime.harness import Events, atomic_write, pod, py

# /proc/self/environ is what execve passed, before Python touches os.environ.
DUMP = """
import json, os, sys
env = dict(e.split("=", 1) for e in open("/proc/self/environ").read().split("\\0") if e)
report = json.dumps({"env": env, "argv": sys.argv[1:], "cwd": os.getcwd()})
""" + atomic_write("report.json", "report")


async def test_environment_and_argv(
    supervisor: Supervisor, events: Events, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://corp:3128")
    monkeypatch.setenv("no_proxy", "localhost")
    monkeypatch.setenv("AMBIENT_TEST_INHERITED", "yes")
    monkeypatch.setenv("POD_NAME", "stale")
    env = (
        EnvVar("A", "a"),
        EnvVar("REF", "$(A)-$(POD_IP)-$$(A)-$(MISSING)"),
        EnvVar("ME", field_path="metadata.name"),
        EnvVar("UID", field_path="metadata.uid"),
        EnvVar("VERSION", field_path="metadata.labels['version']"),
        EnvVar("TEAM", field_path="metadata.annotations['team']"),
        EnvVar("NODE", field_path="spec.nodeName"),
        EnvVar("SA", field_path="spec.serviceAccountName"),
        EnvVar("IP", field_path="status.podIP"),
        EnvVar("HOST", field_path="status.hostIP"),
        EnvVar("NODE_NAME", "overridden"),
    )
    container = py("app", DUMP, "$(A)", "$$(A)", "$(POD_NAME)", "$(VERSION)", env=env)
    (tmp_path / "work").mkdir()
    container = dataclasses.replace(container, working_dir="work")
    spec = pod(
        tmp_path,
        container,
        labels={"app": "web", "version": "v7"},
        annotations={"team": "blue"},
        node="node-2",
        service_account="web-sa",
        proxy="socks5h://127.10.0.5:15080",
        extra_env={"EXTRA": "1"},
    )
    await supervisor.start_pod(spec)
    exited = await events.wait_for(EventKind.EXITED)
    assert exited[0].exit_code == 0, exited[0]
    report = json.loads((tmp_path / "work" / "report.json").read_text())

    inherited = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
    assert "AMBIENT_TEST_INHERITED" in inherited
    assert report["env"] == {
        **inherited,
        "POD_IP": "127.10.0.5",
        "POD_NAME": "web",
        "POD_NAMESPACE": "shop",
        "SERVICE_ACCOUNT": "web-sa",
        "NODE_NAME": "overridden",
        "ALL_PROXY": "socks5h://127.10.0.5:15080",
        "all_proxy": "socks5h://127.10.0.5:15080",
        "EXTRA": "1",
        "A": "a",
        "REF": "a-127.10.0.5-$(A)-$(MISSING)",
        "ME": "web",
        "UID": "uid-web",
        "VERSION": "v7",
        "TEAM": "blue",
        "NODE": "node-2",
        "SA": "web-sa",
        "IP": "127.10.0.5",
        "HOST": "127.0.0.1",
    }
    assert report["argv"] == ["a", "$(A)", "web", "v7"]
    assert report["cwd"] == str(tmp_path / "work")


async def test_not_enrolled_has_no_proxy(
    supervisor: Supervisor, events: Events, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALL_PROXY", "socks5://corp:1080")
    await supervisor.start_pod(pod(tmp_path, py("app", DUMP)))
    await events.wait_for(EventKind.EXITED)
    env = json.loads((tmp_path / "report.json").read_text())["env"]
    assert not [k for k in env if k.upper().endswith("_PROXY")]
    assert env["POD_NAME"] == "web"
