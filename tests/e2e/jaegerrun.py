"""A Jaeger process on loopback for the tracing tests (``ambient.devcluster.jaeger``)."""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from ambient.devcluster.jaeger import JaegerPorts, binary_if_built, loopback_config
from tests.e2e.harness import wait_for


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Jaeger:
    """A running Jaeger: its ports and its query API."""

    def __init__(self, ports: JaegerPorts, log: Path) -> None:
        self.ports = ports
        self.log = log

    def api(self, path: str) -> Any:
        url = f"http://127.0.0.1:{self.ports.query_http}{path}"
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)

    def traces(self, service: str) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self.api(f"/api/traces?service={service}&limit=100")["data"]
        return data

    def trace(self, trace_id: str) -> dict[str, Any] | None:
        try:
            data = self.api(f"/api/traces/{trace_id}")["data"]
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise
        return data[0] if data else None


@contextmanager
def running_jaeger(folder: Path) -> Iterator[Jaeger]:
    """Start Jaeger (skipping the test when it is not built: ``make jaeger-bin``)."""
    binary = binary_if_built()
    if binary is None:
        pytest.skip("Jaeger is not built: run `make jaeger-bin` (make test does)")
    ports = JaegerPorts(*_free_ports(4))
    config = folder / "jaeger.yaml"
    config.write_text(loopback_config(ports))
    log = folder / "jaeger.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(binary), f"--config=file:{config}"], stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    jaeger = Jaeger(ports, log)
    try:

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"jaeger exited: {log.read_text()[-2000:]}")
            try:
                jaeger.api("/api/services")
            except OSError:
                return False
            with socket.create_connection(("127.0.0.1", ports.otlp_grpc), timeout=1):
                return True

        wait_for("Jaeger's query API and OTLP receiver", ready, timeout=60, every=0.2)
        yield jaeger
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
