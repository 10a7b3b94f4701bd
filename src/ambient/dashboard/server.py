"""``ambient dashboard``'s process: a collector that refreshes the graph, and the page.

Every ``interval`` the collector asks the mesh (a :class:`MeshSource`) for its scrape
targets, scrapes them (concurrently, each with a timeout), and rebuilds the inventory
and the graph; the page (``page.html``) asks ``/api/graph`` every ``interval`` and redraws.

The server listens on loopback by default and answers only requests whose ``Host`` is
the address it listens on or ``localhost``: the page shows the mesh's workloads and
policies, and a web page elsewhere could otherwise read them through a DNS name rebound
to 127.0.0.1. Listening on every address (``--address 0.0.0.0``) is the user's choice to
share it: then any ``Host`` is answered.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import time
from importlib import resources
from typing import Any, Protocol

from ambient.dashboard.graph import build_graph
from ambient.dashboard.inventory import build_inventory, build_services
from ambient.dashboard.samples import TargetHistory, increases, scrape
from ambient.httpd import AdminServer, Request, Response

__all__ = ["Collector", "DashboardServer", "MeshSource"]

log = logging.getLogger("ambient.dashboard")

_NO_STORE = (("cache-control", "no-store"), ("x-content-type-options", "nosniff"))


def _digest(page: str, tag: str) -> str:
    """CSP's hash source of the page's one inline ``<tag>`` element."""
    body = page.split(f"<{tag}>", 1)[1].split(f"</{tag}>", 1)[0]
    return "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"


def page_headers(page: str) -> tuple[tuple[str, str], ...]:
    """The page's headers: no caching, no framing, and a policy that lets only its own
    script and style run and talk only to this server."""
    policy = (
        f"default-src 'none'; script-src {_digest(page, 'script')}; "
        f"style-src {_digest(page, 'style')}; connect-src 'self'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    )
    return (*_NO_STORE, ("content-security-policy", policy), ("x-frame-options", "DENY"))


class MeshSource(Protocol):
    """Where the dashboard reads a mesh from (blocking calls: run in a thread).

    A source may also read a target its own way: ``scrape(url, labels, timeout)``
    answering as ``samples.scrape`` (a cluster's mesh pods through their node)."""

    def describe(self) -> str: ...
    def scrape_targets(self) -> list[dict[str, Any]]: ...
    def config_dumps(self) -> list[dict[str, Any]]: ...
    def manifests(self) -> list[dict[str, Any]]: ...


class Collector:
    """Keeps the latest graph of ``source`` (``graph``), refreshed every ``interval``."""

    def __init__(self, source: MeshSource, *, interval: float, window: float) -> None:
        self.source = source
        self.interval = interval
        self.window = window
        self.histories: dict[str, TargetHistory] = {}
        self.graph: dict[str, Any] = {"nodes": [], "edges": [], "services": []}
        self.problems: list[str] = []
        self.updated: float | None = None  # time.time() of the last refresh
        self.refreshes = 0

    async def refresh(self) -> None:
        """One round: targets, scrapes, inventory, graph. Problems are kept, not raised."""
        problems: list[str] = []
        try:
            targets = await asyncio.to_thread(self.source.scrape_targets)
        except OSError as exc:
            targets = []
            problems.append(f"no scrape targets: {exc}")
        urls = {}
        for group in targets:
            labels = {k: str(v) for k, v in dict(group.get("labels", {})).items()}
            path = labels.pop("__metrics_path__", "/metrics")
            for address in group.get("targets", []):
                urls[f"http://{address}{path}"] = labels
        read = getattr(self.source, "scrape", None)  # the source's own way, if it has one
        timeout = min(5.0, self.interval * 2)
        results = await asyncio.gather(
            *(
                asyncio.to_thread(read, url, labels, timeout)
                if read is not None
                else asyncio.to_thread(scrape, url, timeout)
                for url, labels in urls.items()
            ),
            return_exceptions=True,
        )
        for (url, labels), result in zip(urls.items(), results, strict=True):
            if isinstance(result, BaseException):
                problems.append(f"scraping {url} failed: {result}")
                continue
            history = self.histories.setdefault(url, TargetHistory(labels))
            history.labels = labels
            history.add(result, self.window)
        for gone in set(self.histories) - set(urls):
            del self.histories[gone]
        try:
            dumps, manifests = await asyncio.gather(
                asyncio.to_thread(self.source.config_dumps),
                asyncio.to_thread(self.source.manifests),
            )
            inventory = build_inventory(dumps, manifests)
            services = build_services(dumps)
        except OSError as exc:
            problems.append(f"reading the mesh failed: {exc}")
            inventory = {n["id"]: n for n in self.graph["nodes"] if n["kind"] != "unknown"}
            services = {s["id"]: s for s in self.graph.get("services", [])}
        self.graph = build_graph(increases(self.histories.values()), inventory, services)
        self.problems = problems
        self.updated = time.time()
        self.refreshes += 1

    async def run(self) -> None:
        """Refresh forever, every ``interval`` (a slow round delays the next one)."""
        while True:
            started = time.monotonic()
            await self.refresh()
            for problem in self.problems:
                log.warning("%s", problem)
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    def state(self) -> dict[str, Any]:
        """What ``/api/graph`` answers."""
        return {
            "mesh": self.source.describe(),
            "updated": self.updated,
            "refreshes": self.refreshes,
            "interval": self.interval,
            "window": self.window,
            "problems": self.problems,
            **self.graph,
        }


class DashboardServer:
    """Serves the page and ``/api/graph`` of ``collector``."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self.allowed_hosts: set[str] = set()
        self.any_host = False  # listening on every address: the user chose to expose it
        self._server = AdminServer(
            {"/": self._page, "/index.html": self._page, "/api/graph": self._graph},
            max_connections=32,
        )
        page = resources.files("ambient.dashboard").joinpath("page.html").read_text("utf-8")
        self._page_body = page.encode()
        self._page_headers = page_headers(page)

    async def start(self, host: str, port: int) -> str:
        """Listen; returns the page's URL."""
        bound_host, bound_port = await self._server.start(host, port)
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.any_host = bound_host in ("0.0.0.0", "::")
        self.allowed_hosts = {
            f"{shown}:{bound_port}",
            f"localhost:{bound_port}",
            f"127.0.0.1:{bound_port}",
            f"[::1]:{bound_port}",
        }
        return f"http://{shown}:{bound_port}/"

    async def close(self) -> None:
        await self._server.close()

    def _refused(self, request: Request) -> Response | None:
        host = request.headers.get("host", "")
        if self.any_host or host in self.allowed_hosts:
            return None
        return Response(
            421,
            f"this dashboard answers for {sorted(self.allowed_hosts)[0]}, not {host!r}\n".encode(),
        )

    def _page(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        return Response(200, self._page_body, "text/html; charset=utf-8", self._page_headers)

    def _graph(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        body = json.dumps(self.collector.state()).encode()
        return Response(200, body, "application/json", _NO_STORE)
