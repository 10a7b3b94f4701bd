"""Container probes as a kubelet runs them: readiness, liveness and startup.

One ``ContainerProbes`` per run of a container (a restart gets a new one):

- a ``startupProbe`` runs first; until it succeeds the container is not started
  (``started`` False), readiness and liveness are not probed, and
  ``failureThreshold`` failures in a row restart the container;
- a ``readinessProbe`` runs every ``periodSeconds`` after ``initialDelaySeconds``:
  ``successThreshold`` successes in a row make the container ready,
  ``failureThreshold`` failures in a row unready (it starts unready);
- a ``livenessProbe``'s ``failureThreshold`` failures in a row restart the container.

Handlers: ``tcpSocket`` (a connection is accepted within ``timeoutSeconds``),
``httpGet`` (a status from 200 to 399; HTTPS without certificate checks, as the
kubelet's prober; ``User-Agent: kube-probe/<version>``), ``exec`` (exit status 0
within the timeout, run as the container: its environment, folder and network
namespace). Connections are made from where the pod's own traffic starts (its
network namespace with ``--netns``), to the pod's address unless ``host`` is given.

Without a ``readinessProbe`` a container is ready once each TCP port it declares
accepts a connection (Kubernetes would call it ready as soon as it runs; waiting for
the declared ports keeps a pod out of its Services until it listens, as the folder
mode's runtime did); a container with neither is ready once it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ambient.kubelet.podspec import KubeContainer, Probe

__all__ = ["ContainerProbes", "Dialer", "ExecRunner", "ProbeCallbacks", "run_probe"]

log = logging.getLogger("ambient.kubelet")

Dialer = Callable[[str, int], Awaitable[socket.socket]]
"""Connects to ``host:port`` from where the pod's traffic starts; the connected socket."""
ExecRunner = Callable[[tuple[str, ...], float], Awaitable[int]]
"""Runs a command as the container within a timeout; its exit status (-1: timed out)."""
PROBE_AGENT = "kube-probe/1.37"
PORT_POLL = (0.05, 1.0)  # first and longest delay between checks of declared ports


@dataclass(frozen=True)
class ProbeCallbacks:
    """What a container's probes report to."""

    ready: Callable[[bool], None]
    started: Callable[[bool], None]
    restart: Callable[[str], None]
    """Kill the container (liveness or startup failed); the reason for the log."""


async def _connect(dial: Dialer, host: str, port: int, timeout: float) -> socket.socket:
    async with asyncio.timeout(timeout):
        return await dial(host, port)


async def _tcp(dial: Dialer, host: str, port: int, timeout: float) -> bool:
    try:
        sock = await _connect(dial, host, port, timeout)
    except (OSError, TimeoutError):
        return False
    sock.close()
    return True


async def _http(dial: Dialer, host: str, probe: Probe) -> bool:
    try:
        async with asyncio.timeout(probe.timeout):
            sock = await dial(host, probe.port)
            tls = None
            if probe.scheme == "HTTPS":
                tls = ssl.create_default_context()
                tls.check_hostname = False
                tls.verify_mode = ssl.CERT_NONE
            reader, writer = await asyncio.open_connection(sock=sock, ssl=tls)
            try:
                names = {name.lower() for name, _ in probe.headers}
                lines = [f"GET {probe.path or '/'} HTTP/1.1"]
                if "host" not in names:
                    lines.append(f"Host: {host}:{probe.port}")
                if "user-agent" not in names:
                    lines.append(f"User-Agent: {PROBE_AGENT}")
                if "accept" not in names:
                    lines.append("Accept: */*")
                lines += [f"{name}: {value}" for name, value in probe.headers]
                lines.append("Connection: close")
                writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
                await writer.drain()
                status = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(OSError, ssl.SSLError):
                    await writer.wait_closed()
    except (OSError, TimeoutError, ssl.SSLError, UnicodeEncodeError):
        return False
    parts = status.split()
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return False
    return 200 <= int(parts[1]) < 400


async def run_probe(probe: Probe, pod_ip: str, dial: Dialer, run: ExecRunner) -> bool:
    """One attempt of ``probe`` against a pod at ``pod_ip``: passed or not."""
    if probe.problem:
        return probe.kind == "unsupported"  # an unsupported handler is not held against it
    host = probe.host or pod_ip
    if probe.kind == "tcp":
        return await _tcp(dial, host, probe.port, probe.timeout)
    if probe.kind == "http":
        return await _http(dial, host, probe)
    if probe.kind == "exec":
        return await run(probe.command, probe.timeout) == 0
    return True


class ContainerProbes:
    """The probes of one run of a container (see the module docstring)."""

    def __init__(
        self,
        where: str,
        container: KubeContainer,
        pod_ip: str,
        dial: Dialer,
        run: ExecRunner,
        callbacks: ProbeCallbacks,
    ) -> None:
        self.where = where  # "ns/pod/container", for the log
        self.container = container
        self.pod_ip = pod_ip
        self.dial = dial
        self.run = run
        self.callbacks = callbacks
        self._tasks: list[asyncio.Task[None]] = []
        self._started = asyncio.Event()

    def start(self) -> None:
        for problem in {p.problem for p in self._probes() if p.problem}:
            log.warning("%s: %s", self.where, problem)
        startup = self.container.startup
        if startup is None:
            self._started.set()
            self.callbacks.started(True)
        else:
            self._spawn(self._startup(startup))
        self._spawn(self._readiness())
        if self.container.liveness is not None:
            self._spawn(self._liveness(self.container.liveness))

    def _probes(self) -> list[Probe]:
        c = self.container
        return [p for p in (c.readiness, c.liveness, c.startup) if p is not None]

    def _spawn(self, coro: Awaitable[None]) -> None:
        self._tasks.append(asyncio.ensure_future(coro))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _attempt(self, probe: Probe) -> bool:
        return await run_probe(probe, self.pod_ip, self.dial, self.run)

    async def _startup(self, probe: Probe) -> None:
        await asyncio.sleep(probe.initial_delay)
        failures = 0
        while True:
            if await self._attempt(probe):
                self._started.set()
                self.callbacks.started(True)
                return
            failures += 1
            if failures >= probe.failure_threshold:
                self.callbacks.restart(f"startup probe failed {failures} times")
                return
            await asyncio.sleep(probe.period)

    async def _readiness(self) -> None:
        await self._started.wait()
        probe = self.container.readiness
        if probe is None:
            await self._ports_open()
            self.callbacks.ready(True)
            return
        await asyncio.sleep(probe.initial_delay)
        ready, streak, last = False, 0, None
        while True:
            passed = await self._attempt(probe)
            streak = streak + 1 if passed == last else 1
            last = passed
            threshold = probe.success_threshold if passed else probe.failure_threshold
            if passed != ready and streak >= threshold:
                ready = passed
                log.info("%s: readiness probe %s", self.where, "passed" if ready else "failed")
                self.callbacks.ready(ready)
            await asyncio.sleep(probe.period)

    async def _ports_open(self) -> None:
        ports = [p.container_port for p in self.container.spec.ports if p.protocol == "TCP"]
        delay = PORT_POLL[0]
        while True:
            results = [await _tcp(self.dial, self.pod_ip, port, 1.0) for port in ports]
            if all(results):
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, PORT_POLL[1])

    async def _liveness(self, probe: Probe) -> None:
        await self._started.wait()
        await asyncio.sleep(probe.initial_delay)
        failures = 0
        while True:
            if await self._attempt(probe):
                failures = 0
            else:
                failures += 1
                if failures >= probe.failure_threshold:
                    self.callbacks.restart(f"liveness probe failed {failures} times")
                    return
            await asyncio.sleep(probe.period)
