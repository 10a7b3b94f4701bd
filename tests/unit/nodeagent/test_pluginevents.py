"""The plugin-event socket: every field checked, permissions, size limits, clear errors."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from ambient.httpclient import unix_request
from ambient.nodeagent.pluginevents import (
    MAX_EVENT,
    EventError,
    PluginEventServer,
    PodEvent,
    parse_event,
)

GOOD = {
    "containerId": "3f1c9a",
    "netns": "/var/run/netns/cni-1234",
    "ifname": "eth0",
    "podName": "web-7d9f.x",
    "podNamespace": "shop",
    "podUid": "8a7c2e1f-0000-4000-8000-000000000001",
    "ips": ["10.244.1.7", "fd00::7"],
}


def test_a_good_event_parses() -> None:
    assert parse_event(json.dumps(GOOD).encode()) == PodEvent(
        "3f1c9a",
        "/var/run/netns/cni-1234",
        "eth0",
        "web-7d9f.x",
        "shop",
        "8a7c2e1f-0000-4000-8000-000000000001",
        ("10.244.1.7", "fd00::7"),
    )


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"netns": "cni-1234"}, "netns: 'cni-1234' is not an absolute path"),
        ({"netns": "/var/run/netns/../../proc/1/ns/net"}, "'..'"),
        ({"netns": 7}, "netns: a string is required"),
        ({"podNamespace": "Shop"}, "podNamespace: 'Shop' is not a namespace"),
        ({"podNamespace": "a" * 64}, "podNamespace"),
        ({"podName": "web/1"}, "podName: 'web/1' is not a pod name"),
        ({"podName": None}, "podName: a string is required"),
        ({"containerId": "-x"}, "containerId"),
        ({"ifname": "a-very-long-ifname"}, "ifname"),
        ({"podUid": "u;rm"}, "podUid"),
        ({"ips": ["10.0.0.300"]}, "ips[0]: '10.0.0.300' is not an IP address"),
        ({"ips": [7]}, "ips[0]"),
        ({"ips": ["10.0.0.1"] * 17}, "at most 16"),
    ],
)
def test_a_bad_field_is_named(change: dict[str, Any], words: str) -> None:
    with pytest.raises(EventError) as caught:
        parse_event(json.dumps({**GOOD, **change}).encode())
    assert words in str(caught.value)


@pytest.mark.parametrize(("raw", "words"), [(b"{", "not JSON"), (b"[]", "JSON object")])
def test_a_bad_body_is_refused(raw: bytes, words: str) -> None:
    with pytest.raises(EventError, match=words):
        parse_event(raw)


async def _handler(event: PodEvent) -> dict[str, Any]:
    return {"enrolled": False, "pod": event.pod}


async def test_socket_and_folder_are_private_and_answers_are_clear(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o755)
    server = PluginEventServer(_handler)
    path = await server.start(run_dir)
    try:
        assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_ISSOCK(path.stat().st_mode)
        status, answer = await unix_request(str(path), "POST", "/cmdadd", GOOD)
        assert (status, answer) == (200, {"enrolled": False, "pod": "shop/web-7d9f.x"})
        status, answer = await unix_request(str(path), "POST", "/cmdadd", {**GOOD, "ips": "x"})
        assert status == 400 and "ips: a list" in answer["error"]
        big = {**GOOD, "containerId": "a" * (MAX_EVENT + 1)}
        reader_status, _ = await _raw_status(path, json.dumps(big).encode())
        assert reader_status == 413
    finally:
        await server.close()
    assert not path.exists()


async def _raw_status(path: Path, body: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(
        b"POST /cmdadd HTTP/1.1\r\nHost: x\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    await writer.drain()
    data = await reader.read()
    writer.close()
    return int(data.split(b" ", 2)[1]), data


async def test_a_symlinked_run_folder_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(OSError, match="not a folder"):
        await PluginEventServer(_handler).start(tmp_path / "link")


async def test_a_folder_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a folder to another user")
    other = tmp_path / "other"
    other.mkdir()
    os.chown(other, 65534, 65534)
    with pytest.raises(OSError, match="belongs to uid 65534"):
        await PluginEventServer(_handler).start(other)
