"""The distributed mode's process bodies in one event loop: control plane, join, a ztunnel.

The ztunnel serves node-9, which has no pods, so nothing binds the mesh's fixed
loopback addresses (its admin endpoints take free ports on 127.0.0.1).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from ambient.cli.app import parse_duration
from ambient.cli.main import cli
from ambient.config import load_paths
from ambient.local.distributed import (
    ControlPlaneService,
    DistributedError,
    create_token,
    node_ca_root,
    node_credentials_dir,
    start_controlplane,
    start_ztunnel,
    xds_address_for,
)
from ambient.xds.ca_client import join_node

SHOP = Path(__file__).resolve().parents[3] / "examples" / "shop"


def read_bytes(path: str) -> bytes:
    return Path(path).read_bytes()


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


async def test_a_joined_node_syncs_and_gets_its_certificates(
    tmp_path: Path, controlplane: ControlPlaneService
) -> None:
    info = controlplane.info
    assert info["nodes"] == {"node-1": "127.1.0.1", "node-2": "127.1.0.2"}
    assert Path(info["node_ca_root"]) == node_ca_root(tmp_path / "cp")
    token = create_token(tmp_path / "cp", "node-9", timedelta(minutes=5))
    credentials = await join_node(
        info["join_address"], token, "node-9", read_bytes(info["node_ca_root"])
    )
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
        assert proxy.xds.synced.is_set()
        assert proxy.ztunnel.ready
        dump = proxy.ztunnel.config_dump()
        assert {w["workloadName"] for w in dump["workloads"]} >= {"web", "orders-v1", "probe"}
        # A renewed node certificate is stored and presented on the next xDS stream.
        before = proxy.xds.credentials
        saved = read_bytes(str(node_credentials_dir(tmp_path / "n9") / "node-cert.pem"))
        fresh = await proxy.ca_client.renew_node()
        assert proxy.xds.credentials is not before
        after = read_bytes(str(node_credentials_dir(tmp_path / "n9") / "node-cert.pem"))
        assert after == fresh.chain_pem != saved
    finally:
        await proxy.close()


async def test_a_ztunnel_without_credentials_says_to_join(tmp_path: Path) -> None:
    with pytest.raises(DistributedError, match=r"run `ambient node join` first"):
        await start_ztunnel(
            "node-1", "127.0.0.1", tmp_path, ca_address="127.0.0.1:1", xds_address="127.0.0.1:1"
        )


def test_xds_address_is_beside_the_certificate_service() -> None:
    assert xds_address_for("10.0.0.5:15012") == "10.0.0.5:15010"
    assert xds_address_for("[::1]:15012") == "[::1]:15010"


def test_durations() -> None:
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("2d") == timedelta(days=2)
    for bad in ("", "1", "h", "1x", "1h 2m"):
        with pytest.raises(click.BadParameter):
            parse_duration(bad)


def test_token_create_prints_a_token(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["node", "token", "create", "node-1", "--ttl", "10m", "--state-dir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert len(result.output.strip()) >= 32
    assert (tmp_path / "nodes" / "join-tokens.json").exists()
    assert node_ca_root(tmp_path).exists()
    refused = CliRunner().invoke(
        cli, ["node", "token", "create", "Node_1", "--state-dir", str(tmp_path)]
    )
    assert refused.exit_code == 1
    assert "error: " in refused.output


def test_controlplane_reports_config_errors_and_starts_nothing(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata: {}\n")
    result = CliRunner().invoke(
        cli, ["controlplane", "--config", str(tmp_path), "--state-dir", str(tmp_path / "s")]
    )
    assert result.exit_code == 1
    assert "nothing was started: fix the" in result.output
    assert not (tmp_path / "s").exists()


def test_a_second_controlplane_on_the_same_state_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "s"
    state.mkdir()
    (state / "controlplane.json").write_text(json.dumps({"pid": os.getppid()}))
    result = CliRunner().invoke(
        cli, ["controlplane", "--config", str(SHOP), "--state-dir", str(state)]
    )
    assert result.exit_code == 1
    assert f"a control plane is already running for {state} (pid {os.getppid()})" in result.output
