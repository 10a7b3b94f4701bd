"""Headless Chromium (Debian's ``chromium``) driven over the DevTools protocol.

A browser we did not write, loading our pages and running their scripts: the tests ask it
questions with ``Runtime.evaluate``. It runs with a throwaway profile, without its
background traffic (updates, sync, metrics), and is killed at the end.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

__all__ = ["Page", "chromium_binary", "headless_page"]

_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")
_QUIET = [
    "--headless=new",
    "--no-sandbox",  # we are root; the sandbox refuses to run as root
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--metrics-recording-only",
    "--disable-dev-shm-usage",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
    "--no-proxy-server",
]


def chromium_binary() -> str:
    """The path of Debian's chromium; skips the test when it is not installed."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("chromium is not installed (make system-deps installs Debian's package)")


class Page:
    """One tab, attached with a flat session."""

    def __init__(self, socket: ClientConnection, session: str) -> None:
        self._socket = socket
        self._session = session
        self._ids = itertools.count(1000)

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return _call(self._socket, self._ids, method, params or {}, self._session)

    def evaluate(self, expression: str) -> Any:
        """The JSON value of ``expression`` in the page (awaiting a promise)."""
        answer = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in answer:
            raise AssertionError(f"{expression!r} threw: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def wait_for(self, what: str, expression: str, timeout: float = 60) -> Any:
        """Evaluate ``expression`` until it is truthy (the page redraws as data arrives)."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = self.evaluate(expression)
            if last:
                return last
            time.sleep(0.25)
        raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last: {last!r}")


def _call(
    socket: ClientConnection,
    ids: Iterator[int],
    method: str,
    params: dict[str, Any],
    session: str | None = None,
) -> dict[str, Any]:
    call_id = next(ids)
    message: dict[str, Any] = {"id": call_id, "method": method, "params": params}
    if session is not None:
        message["sessionId"] = session
    socket.send(json.dumps(message))
    while True:  # events arrive between answers: skip them
        answer = json.loads(socket.recv(timeout=60))
        if answer.get("id") == call_id:
            if "error" in answer:
                raise AssertionError(f"{method} failed: {answer['error']}")
            result: dict[str, Any] = answer["result"]
            return result


@contextmanager
def headless_page(url: str) -> Iterator[Page]:
    """Chromium showing ``url``; yields the page once its document has loaded."""
    binary = chromium_binary()
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        process = subprocess.Popen(
            [binary, *_QUIET, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its renderer, GPU and utility processes: one group
        )
        try:
            endpoint = _endpoint(process, Path(profile))
            with connect(endpoint, max_size=64 * 1024 * 1024, open_timeout=30) as socket:
                ids = itertools.count(1)
                target = _call(socket, ids, "Target.createTarget", {"url": "about:blank"})
                attached = _call(
                    socket,
                    ids,
                    "Target.attachToTarget",
                    {"targetId": target["targetId"], "flatten": True},
                )
                page = Page(socket, attached["sessionId"])
                page.send("Page.enable")
                page.send("Page.navigate", {"url": url})
                page.wait_for("the page to load", "document.readyState === 'complete'")
                yield page
        finally:
            _kill_group(process)


def _kill_group(process: subprocess.Popen[str], timeout: float = 30) -> None:
    """Kill Chromium and every process it started (its session's group), and wait until
    they are gone: a child still writing its profile would race the folder's removal."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def _endpoint(process: subprocess.Popen[str], profile: Path, timeout: float = 60) -> str:
    """The browser's DevTools WebSocket URL, from the line Chromium prints when ready; its
    standard error is drained by a thread from then on (a full pipe would stall it)."""
    assert process.stderr is not None
    stream = process.stderr
    lines: queue.Queue[str | None] = queue.Queue()

    def drain() -> None:
        with stream:  # closed at Chromium's exit
            for line in stream:
                lines.put(line)
        lines.put(None)

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            break  # exited
        seen.append(line.rstrip())
        match = _LISTENING.search(line)
        if match:
            return match.group(1)
    process.kill()
    raise AssertionError(f"chromium did not start (profile {profile}): {seen[-10:]}")
