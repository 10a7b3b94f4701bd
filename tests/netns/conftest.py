"""Root-only end-to-end tests of ``ambient up --netns``; skipped with the reason elsewhere."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import uuid

import pytest


@functools.cache
def netns_unavailable() -> str | None:
    """Why network-namespace tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, veth links, nftables)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"needs the `{tool}` tool"
    probe = f"ambient-probe-{uuid.uuid4().hex[:8]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    try:
        table = subprocess.run(
            ["ip", "netns", "exec", probe, "nft", "add", "table", "inet", "probe"],
            capture_output=True,
            text=True,
        )
        if table.returncode != 0:
            return f"nftables does not work in a namespace: {table.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "delete", probe], capture_output=True)
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = netns_unavailable()
    if reason is None:
        return
    for item in items:
        if "tests/netns/" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.skip(reason=f"--netns e2e: {reason}"))
