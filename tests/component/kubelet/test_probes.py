"""Probes against real listeners on loopback (``ambient.kubelet.probes``)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import pytest

from ambient.config.resources import Container, ContainerPort
from ambient.kubelet.network import plain_dial
from ambient.kubelet.podspec import KubeContainer, Probe
from ambient.kubelet.probes import ContainerProbes, ProbeCallbacks, run_probe


async def _no_exec(_command: tuple[str, ...], _timeout: float) -> int:
    raise AssertionError("no exec expected")


async def _exec(command: tuple[str, ...], timeout: float) -> int:
    process = await asyncio.create_subprocess_exec(*command)
    try:
        async with asyncio.timeout(timeout):
            return await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()
        return -1


@pytest.fixture
async def http_server() -> AsyncIterator[tuple[int, list[bytes]]]:
    """Answers /ok 200, /moved 302, anything else 500; records the requests."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head)
        path = head.split(b" ")[1]
        code = {b"/ok": b"200 OK", b"/moved": b"302 Found"}.get(path, b"500 Oops")
        writer.write(b"HTTP/1.1 " + code + b"\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1], seen
    server.close()
    await server.wait_closed()


async def test_http_probe_statuses_and_headers(http_server: tuple[int, list[bytes]]) -> None:
    port, seen = http_server
    ok = Probe("http", port, path="/ok", headers=(("X-Probe", "1"),))
    assert await run_probe(ok, "127.0.0.1", plain_dial, _no_exec)
    assert b"User-Agent: kube-probe/" in seen[0] and b"X-Probe: 1" in seen[0]
    assert await run_probe(Probe("http", port, path="/moved"), "127.0.0.1", plain_dial, _no_exec)
    assert not await run_probe(Probe("http", port, path="/x"), "127.0.0.1", plain_dial, _no_exec)


async def test_tcp_and_exec_probes(http_server: tuple[int, list[bytes]]) -> None:
    port, _ = http_server
    assert await run_probe(Probe("tcp", port), "127.0.0.1", plain_dial, _no_exec)
    closed = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    free = closed.sockets[0].getsockname()[1]
    closed.close()
    await closed.wait_closed()
    assert not await run_probe(Probe("tcp", free), "127.0.0.1", plain_dial, _no_exec)
    true = Probe("exec", command=(sys.executable, "-c", "pass"))
    false = Probe("exec", command=(sys.executable, "-c", "raise SystemExit(1)"))
    slow = Probe("exec", command=(sys.executable, "-c", "import time; time.sleep(5)"), timeout=0.2)
    assert await run_probe(true, "127.0.0.1", plain_dial, _exec)
    assert not await run_probe(false, "127.0.0.1", plain_dial, _exec)
    assert not await run_probe(slow, "127.0.0.1", plain_dial, _exec)


async def test_readiness_thresholds_and_liveness_restart(
    http_server: tuple[int, list[bytes]],
) -> None:
    port, _ = http_server
    path = ["/x"]
    events: asyncio.Queue[tuple[str, object]] = asyncio.Queue()
    readiness = Probe("http", port, path="/ok", period=0.02, success_threshold=2)
    liveness = Probe("http", port, path="/x", period=0.02, failure_threshold=3)
    container = KubeContainer(Container("c"), "img", readiness=readiness, liveness=liveness)
    probes = ContainerProbes(
        "ns/p/c",
        container,
        "127.0.0.1",
        plain_dial,
        _no_exec,
        ProbeCallbacks(
            ready=lambda v: events.put_nowait(("ready", v)),
            started=lambda v: events.put_nowait(("started", v)),
            restart=lambda why: events.put_nowait(("restart", why)),
        ),
    )
    probes.start()
    try:
        got = [await asyncio.wait_for(events.get(), 5) for _ in range(3)]
    finally:
        await probes.stop()
    assert ("started", True) in got and ("ready", True) in got
    assert ("restart", "liveness probe failed 3 times") in got
    assert path == ["/x"]


async def test_without_probe_ready_once_declared_ports_accept() -> None:
    ready = asyncio.Event()
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    container = KubeContainer(Container("c", ports=(ContainerPort(port),)), "img")
    probes = ContainerProbes(
        "ns/p/c",
        container,
        "127.0.0.1",
        plain_dial,
        _no_exec,
        ProbeCallbacks(ready=lambda v: ready.set(), started=lambda v: None, restart=print),
    )
    probes.start()
    try:
        await asyncio.sleep(0.3)
        assert not ready.is_set()  # nothing listens on the declared port yet
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)
        await asyncio.wait_for(ready.wait(), 5)
    finally:
        await probes.stop()
        server.close()
        await server.wait_closed()
