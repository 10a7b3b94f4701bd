"""Worker processes for one waypoint: more cores behind the same HBONE listener.

A Python process runs on one core; Envoy runs a waypoint on ``--concurrency`` worker
threads, and Istio's ztunnel on two workers. Here a hosted waypoint with ``workers``
> 1 (``waypoint_factory(workers=...)``, ``AMBIENT_WAYPOINT_WORKERS``) runs its first
worker in the node proxy's process, as before, and starts the others as child
processes (``python -m ambient.waypoint.worker``). Decisions, made as Envoy does:

- *Listener*: every worker binds the waypoint's HBONE addresses itself with
  ``SO_REUSEPORT`` (Envoy's default on Linux: one socket per worker), so the kernel
  spreads new connections over the workers by their addresses' hash. A connection
  stays with the worker that accepted it, with all its HBONE streams; the balance
  is per connection (per source ztunnel and pool connection), not per request.
- *Configuration*: only the node proxy follows xDS. Each change of its state
  (workloads, services), of the L7 objects and of the waypoint's certificate is sent
  to every worker over its control channel (a socket pair; length-prefixed pickles
  between a parent and the child it started, nothing from the network), coalesced
  so that a worker gets the latest version, and a change to one worker never waits
  for the data path. A worker binds its listener only after the first
  configuration and certificate arrived: it never serves traffic unconfigured.
- *Metrics*: the first worker serves the admin endpoints; its ``/metrics`` asks
  every other worker for its exposition and sums the series (``metricsum``), one
  proxy as Envoy's merged stats present it.
- *Shutdown*: ``close`` tells each worker to close (its listener first, then its
  connections) and waits for it, killing one that does not exit in time; a worker
  whose channel reaches end of file (the parent died) closes itself.
- A worker that exits unexpectedly is logged as an error; the kernel stops handing
  it connections as its socket is gone, the other workers keep serving. A worker
  that cannot be pushed to, or does not answer a scrape in time, is killed (fail
  closed: it must not serve with configuration that no longer reaches it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import socket
import struct
import sys
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ambient.state.workload import Service, Workload

if TYPE_CHECKING:
    from ambient.identity.certs import WorkloadCertificate
    from ambient.waypoint.config import L7Config
    from ambient.waypoint.proxy.server import Waypoint

__all__ = ["ENV", "WaypointWorkers", "read_message", "workers_from_env", "write_message"]

log = logging.getLogger("ambient.waypoint")

START_TIMEOUT = 120.0  # seconds: a worker imports the proxy and binds on a loaded machine
SCRAPE_TIMEOUT = 10.0
CLOSE_TIMEOUT = 15.0
_HEADER = struct.Struct("!I")
MAX_MESSAGE = 1 << 30


ENV = "AMBIENT_WAYPOINT_WORKERS"


def workers_from_env(environ: Mapping[str, str] | None = None) -> int:
    """Processes per hosted waypoint from ``AMBIENT_WAYPOINT_WORKERS`` (default 1).

    One by default: a node proxy hosts a waypoint in its own process unless told
    otherwise (Envoy's ``--concurrency`` is likewise set per deployment)."""
    value = (os.environ if environ is None else environ).get(ENV, "").strip()
    if not value:
        return 1
    try:
        count = int(value)
    except ValueError:
        raise ValueError(f"{ENV}={value!r}: not a whole number of worker processes") from None
    if not 1 <= count <= 64:
        raise ValueError(f"{ENV}={value!r}: between 1 and 64 worker processes")
    return count


async def read_message(reader: asyncio.StreamReader) -> tuple[str, Any]:
    """One message of the control channel; ``EOFError`` at its end."""
    try:
        (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
        if size > MAX_MESSAGE:
            raise EOFError(f"control message of {size} bytes")
        kind, payload = pickle.loads(await reader.readexactly(size))
    except asyncio.IncompleteReadError as exc:
        raise EOFError("control channel closed") from exc
    return str(kind), payload


def write_message(writer: asyncio.StreamWriter, kind: str, payload: Any = None) -> None:
    """Queue one message on the control channel (one write: messages never interleave)."""
    data = pickle.dumps((kind, payload), protocol=pickle.HIGHEST_PROTOCOL)
    writer.write(_HEADER.pack(len(data)) + data)


class _Worker:
    """One child process and its end of the control channel."""

    def __init__(
        self,
        index: int,
        process: asyncio.subprocess.Process,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.index = index
        self.process = process
        self.reader = reader
        self.writer = writer
        self.lock = asyncio.Lock()  # one request/reply (start, scrape) at a time
        self.alive = True


class WaypointWorkers:
    """``count`` extra worker processes of ``waypoint`` (a hosted waypoint of ``workload``)."""

    def __init__(self, count: int, workload: Workload, waypoint: Waypoint, l7: L7Config) -> None:
        ports = {port for _, port in waypoint.hbone_addresses}
        if len(ports) != 1:
            raise ValueError(
                f"waypoint {waypoint.namespace}/{waypoint.name}: workers need one HBONE port "
                f"on every address, bound {sorted(ports)}"
            )
        self.count = count
        self.workload = workload
        self.waypoint = waypoint
        self.l7 = l7
        self.hbone_port = ports.pop()
        self.workers: list[_Worker] = []
        self._sent_workloads: dict[str, Workload] = {}
        self._sent_services: dict[str, Service] = {}
        self._sent_l7 = -1
        self._sent_cert: WorkloadCertificate | None = None
        self._dirty = asyncio.Event()
        self._pushing = asyncio.Lock()  # pushes go out whole and in order
        self._pusher: asyncio.Task[None] | None = None
        self._watchers: list[asyncio.Task[None]] = []
        self._closing = False

    async def start(self) -> None:
        """Start every worker and wait until each serves (configured, listening)."""
        waypoint = self.waypoint
        # State and L7Config keep their listeners for good: hold this pool weakly there,
        # so a waypoint stopped and started again leaves nothing but a dead reference.
        changed = weakref.WeakMethod(self._changed)

        def on_change(source: object) -> None:
            method = changed()
            if method is not None:
                method(source)

        waypoint.state.on_change(on_change)
        self.l7.on_change(on_change)
        self._unsubscribe = waypoint.certificates.subscribe(self._certificate_changed)
        first = self._push()
        for index in range(1, self.count + 1):
            worker = await self._spawn(index)
            self.workers.append(worker)
            write_message(worker.writer, "init", self._init(index))
            write_message(worker.writer, "push", first)
        for worker in self.workers:
            async with worker.lock:
                kind, payload = await asyncio.wait_for(read_message(worker.reader), START_TIMEOUT)
            if kind != "ready":
                raise RuntimeError(f"waypoint worker {worker.index} did not start: {payload}")
            self._watchers.append(asyncio.ensure_future(self._watch(worker)))
        self._pusher = asyncio.ensure_future(self._push_loop())
        log.info(
            "waypoint %s/%s: %d worker processes share its HBONE listener (pids %s)",
            waypoint.namespace,
            waypoint.name,
            self.count + 1,
            ", ".join(str(w.process.pid) for w in self.workers),
        )

    async def scrape(self) -> list[bytes]:
        """Every live worker's metrics exposition (a worker that does not answer is left out)."""
        return [text for text in await asyncio.gather(*map(self._scrape, self.workers)) if text]

    async def close(self) -> None:
        """Close every worker (waiting for each), then stop following changes."""
        self._closing = True
        if self._pusher is not None:
            self._pusher.cancel()
        for worker in self.workers:
            if worker.alive:
                with contextlib.suppress(ConnectionError):
                    write_message(worker.writer, "close")
        for worker in self.workers:
            try:
                await asyncio.wait_for(worker.process.wait(), CLOSE_TIMEOUT)
            except TimeoutError:
                log.error("waypoint worker %d did not exit: killed", worker.index)
                with contextlib.suppress(ProcessLookupError):
                    worker.process.kill()
                await worker.process.wait()
            worker.writer.close()
        for task in [*self._watchers, *([self._pusher] if self._pusher else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if hasattr(self, "_unsubscribe"):
            self._unsubscribe()

    # -- the parent side of the channel --------------------------------------------------

    async def _spawn(self, index: int) -> _Worker:
        ours, theirs = socket.socketpair()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "ambient.waypoint.worker",
                str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours, limit=MAX_MESSAGE)
        return _Worker(index, process, reader, writer)

    def _init(self, index: int) -> dict[str, Any]:
        return {
            "index": index,
            "node": self.waypoint.state.node,
            "workload": self.workload,
            "settings": self.waypoint.settings,
            "hbone_port": self.hbone_port,
            "log_level": logging.getLogger("ambient").getEffectiveLevel(),
        }

    def _changed(self, _source: object) -> None:
        if not self._closing:
            self._dirty.set()

    def _certificate_changed(self, cert: WorkloadCertificate) -> None:
        if cert.identity == self.waypoint.identity:
            self._dirty.set()

    def _push(self) -> dict[str, Any]:
        """What changed since the last push: state as a delta, L7 objects and certificate
        whole (only when they changed)."""
        state = self.waypoint.state
        upserted: list[Workload | Service] = []
        removed: list[str] = []
        for current, sent in (
            (state.workloads, self._sent_workloads),
            (state.services, self._sent_services),
        ):
            upserted += [v for k, v in current.items() if sent.get(k) is not v]
            removed += [k for k in sent if k not in current]
        self._sent_workloads = dict(state.workloads)
        self._sent_services = dict(state.services)
        push: dict[str, Any] = {"upserted": upserted, "removed": removed}
        if self.l7.synced and self.l7.version != self._sent_l7:
            push["l7"] = self.l7.config
            self._sent_l7 = self.l7.version
        cert = self.waypoint.upstream.certificate
        if cert is not None and cert is not self._sent_cert:
            push["certificate"] = cert
            self._sent_cert = cert
        return push

    async def flush(self) -> None:
        """Return once every worker has applied every change made before the call."""
        await self._send_push()
        for worker in self.workers:
            await self._ask(worker, "ping", "pong")

    async def _push_loop(self) -> None:
        while True:
            await self._dirty.wait()
            await self._send_push()

    async def _send_push(self) -> None:
        async with self._pushing:
            self._dirty.clear()
            push = self._push()
            for worker in self.workers:
                if worker.alive:
                    try:
                        write_message(worker.writer, "push", push)
                        await worker.writer.drain()
                    except ConnectionError as exc:
                        self._drop(worker, f"cannot push its configuration: {exc}")

    async def _scrape(self, worker: _Worker) -> bytes:
        payload = await self._ask(worker, "metrics", "metrics")
        return bytes(payload) if payload is not None else b""

    async def _ask(self, worker: _Worker, kind: str, expected: str) -> Any | None:
        """One request and its answer over ``worker``'s channel; None if it is gone.

        A worker that does not answer within SCRAPE_TIMEOUT, or answers out of step
        (another kind than ``expected``), is dropped: its channel can no longer be trusted
        to carry the configuration."""
        if not worker.alive:
            return None
        try:
            async with worker.lock:
                write_message(worker.writer, kind)
                answer, payload = await asyncio.wait_for(
                    read_message(worker.reader), SCRAPE_TIMEOUT
                )
        except (TimeoutError, EOFError, ConnectionError) as exc:
            self._drop(worker, f"no answer to {kind!r}: {exc or 'timed out'}")
            return None
        if answer != expected:
            self._drop(worker, f"answered {kind!r} with {answer!r}")
            return None
        return payload

    def _drop(self, worker: _Worker, reason: str) -> None:
        """Kill a worker its parent cannot talk to: stuck, or out of step on the channel,
        it must not go on serving with a configuration that no longer reaches it."""
        log.error("waypoint worker %d: %s: killed", worker.index, reason)
        worker.alive = False
        with contextlib.suppress(ProcessLookupError):
            worker.process.kill()

    async def _watch(self, worker: _Worker) -> None:
        code = await worker.process.wait()
        worker.alive = False
        if not self._closing:
            log.error(
                "waypoint %s/%s: worker %d (pid %d) exited with %s; the others keep serving",
                self.waypoint.namespace,
                self.waypoint.name,
                worker.index,
                worker.process.pid,
                code,
            )
