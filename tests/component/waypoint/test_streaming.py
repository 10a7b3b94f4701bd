"""100 MB request and response bodies stream through the waypoint without being held whole.

curl uploads 100 MB (chunked, from a pipe) to the app's ``/echo``, which
streams it back while still receiving; everything but curl runs in this
process (entry, waypoint, destination ztunnel, app), so this process's RSS,
sampled during the transfer, bounds what the whole path buffers.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from tests.component.waypoint.harness import WaypointMesh

SIZE = 100 * 1024 * 1024
MEMORY_BOUND_MB = 80  # well under one body (100 MB), let alone both directions (200 MB)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed"),
]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("version", ["--http1.1", "--http2-prior-knowledge"])
async def test_100mb_both_ways_bounded_memory(mesh: WaypointMesh, version: str) -> None:
    entry = mesh.entry()
    await entry.start()
    baseline = rss_mb()
    peak = baseline
    try:
        proc = await asyncio.create_subprocess_shell(
            f"head -c {SIZE} /dev/zero | curl -sS {version} --max-time 240 -T - "
            f"-o /dev/null -w '%{{http_code}} %{{size_upload}} %{{size_download}}' {entry.url}/echo",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        communicate = asyncio.ensure_future(proc.communicate())
        while not communicate.done():
            peak = max(peak, rss_mb())
            await asyncio.wait([communicate], timeout=0.05)
        out, err = communicate.result()
    finally:
        await entry.close()
    assert proc.returncode == 0, err.decode()
    status, uploaded, downloaded = out.decode().split()
    assert status == "200" and int(downloaded) == SIZE, out.decode()
    assert int(uploaded) >= SIZE  # curl counts HTTP/1.1 chunk framing too
    grew = peak - baseline
    print(f"{version}: RSS {baseline:.0f} MB -> peak {peak:.0f} MB")
    assert grew < MEMORY_BOUND_MB, f"RSS grew {grew:.0f} MB while streaming 2 x 100 MB"
    text = await mesh.scrape()
    assert "istio_request_bytes_sum{" in text
    sums = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("istio_request_bytes_sum{")
    ]
    assert sum(sums) == SIZE
