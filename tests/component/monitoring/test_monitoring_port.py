"""The control plane's monitoring port with real gRPC clients: a joined ztunnel's stream,
its pushes and a refused certificate request are counted; discovery lists the mesh.

The ztunnel serves node-9, which has no pods, so nothing binds the mesh's fixed loopback
addresses (the control plane listens on free ports of 127.0.0.1, monitoring included).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import urllib.request
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from ambient.config import load_paths
from ambient.identity.certs import generate_key_and_csr
from ambient.identity.spiffe import SpiffeId
from ambient.local.distributed import (
    ControlPlaneService,
    create_token,
    node_credentials_dir,
    start_controlplane,
    start_ztunnel,
)
from ambient.xds.ca_client import CaClientError, join_node

SHOP = Path(__file__).resolve().parents[3] / "examples" / "shop"


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as answer:
        data: bytes = answer.read()
        return data


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


async def samples(address: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample by (name as served, labels): read as Prometheus reads the text, names
    untouched (prometheus-client's own parser renames counters to ``_total``)."""
    text = (await asyncio.to_thread(fetch, f"http://{address}/metrics")).decode()
    found = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is not None:
            labels = frozenset(_LABEL.findall(match.group(2) or ""))
            found[(match.group(1), labels)] = float(match.group(3))
    return found


@pytest.fixture
async def controlplane(tmp_path: Path) -> AsyncIterator[ControlPlaneService]:
    config = tmp_path / "config"
    shutil.copytree(SHOP, config)
    service = await start_controlplane(
        config,
        tmp_path / "cp",
        load_paths([config]),
        listen="127.0.0.1:0",
        join_listen="127.0.0.1:0",
        xds_listen="127.0.0.1:0",
    )
    yield service
    await service.close()


async def test_streams_pushes_and_certificate_refusals_are_counted(
    tmp_path: Path, controlplane: ControlPlaneService
) -> None:
    info = controlplane.info
    monitoring = info["monitoring_address"]
    assert monitoring.startswith("127.0.0.1:") and not monitoring.endswith(":15014")
    before = await samples(monitoring)
    assert before[("pilot_xds", frozenset())] == 0
    assert before[("citadel_server_csr_count", frozenset())] == 0

    token = create_token(tmp_path / "cp", "node-9", timedelta(minutes=5))
    roots = await asyncio.to_thread(Path(info["node_ca_root"]).read_bytes)
    credentials = await join_node(info["join_address"], token, "node-9", roots)
    credentials.save(node_credentials_dir(tmp_path / "n9"))
    proxy = await start_ztunnel(
        "node-9",
        "127.0.0.1",
        tmp_path / "n9",
        ca_address=info["ca_address"],
        xds_address=info["xds_address"],
        sync_timeout=10,
        ports=(0, 0, 0),
    )
    try:
        # web runs on node-1: node-9 may not have its certificate.
        web = SpiffeId.workload("shop", "web")
        with pytest.raises(CaClientError):
            await proxy.ca_client.issue(web, generate_key_and_csr(web)[1])
        after = await samples(monitoring)
    finally:
        await proxy.close()
    address_type = frozenset({("type", "type.googleapis.com/istio.workload.Address")})
    assert after[("pilot_xds", frozenset())] == 1
    assert after[("pilot_xds_pushes", address_type)] >= 1
    assert after[("pilot_xds_push_time_count", address_type)] >= 1
    assert after[("citadel_server_csr_count", frozenset())] == 1
    assert after[("citadel_server_success_cert_issuance_count", frozenset())] == 0
    assert after[("ambient_ca_refusals", frozenset({("code", "PERMISSION_DENIED")}))] == 1
    assert after[("pilot_services", frozenset())] == 2  # web, orders
    assert after[("citadel_server_root_cert_expiry_timestamp", frozenset())] > 1.7e9
    # Istio's forms: counters without _total, no _created series.
    text = (await asyncio.to_thread(fetch, f"http://{monitoring}/metrics")).decode()
    assert "# TYPE pilot_xds_pushes counter" in text
    assert not re.search(r"_total[{ ]", text) and "_created" not in text


async def test_discovery_lists_the_control_plane_and_each_nodes_ztunnel(
    controlplane: ControlPlaneService,
) -> None:
    import json

    monitoring = controlplane.info["monitoring_address"]
    groups = json.loads(await asyncio.to_thread(fetch, f"http://{monitoring}/prometheus/sd"))
    assert groups[0] == {
        "targets": [monitoring],
        "labels": {
            "app": "istiod",
            "namespace": "ambient-system",
            "pod": "controlplane",
            "__metrics_path__": "/metrics",
        },
    }
    assert [(g["targets"], g["labels"]["node"], g["labels"]["app"]) for g in groups[1:]] == [
        (["127.1.0.1:15020"], "node-1", "ztunnel"),
        (["127.1.0.2:15020"], "node-2", "ztunnel"),
    ]
