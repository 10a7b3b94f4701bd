"""``ambient waypoint hosted``: the process of a waypoint pod follows the hosted waypoint's
readiness on the pod's address and stops on SIGTERM."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

POD_IP = "127.0.0.77"


class _Ready(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz/ready" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def readiness() -> Iterator[http.server.HTTPServer]:
    """What the node proxy serves on a waypoint pod's address: :15021/healthz/ready."""
    try:
        server = http.server.HTTPServer((POD_IP, 15021), _Ready)
    except OSError as err:
        pytest.skip(f"cannot bind {POD_IP}:15021: {err}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_reports_readiness_and_stops_on_sigterm(readiness: http.server.HTTPServer) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "ambient", "waypoint", "hosted", "--interval", "0.2"],
        env={**os.environ, "POD_IP": POD_IP},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()  # the first report: it answers
        assert line.startswith(f"waypoint on {POD_IP}: ready"), line
        readiness.shutdown()
        readiness.server_close()
        line = process.stderr.readline()
        assert line.startswith(f"waypoint on {POD_IP}: not ready"), line
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
