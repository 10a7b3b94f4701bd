"""Hot reload: the folder watcher's debounce and what a reload changes (``MeshConfig``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ambient.config import ConfigError, load_paths
from ambient.config.configset import Ref
from ambient.config.resources import Service
from ambient.controlplane import ControlPlane
from ambient.local.configops import MeshConfig
from ambient.local.watch import FolderWatcher
from tests.pki import make_ca

NS = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n"
SVC = """\
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: shop}}
spec:
  selector: {{app: {name}}}
  ports: [{{port: {port}}}]
"""


def folder(tmp_path: Path) -> Path:
    config = tmp_path / "config"
    config.mkdir()
    (config / "ns.yaml").write_text(NS)
    (config / "a.yaml").write_text(SVC.format(name="a", port=80))
    return config


def mesh_config(tmp_path: Path) -> MeshConfig:
    config = folder(tmp_path)
    loaded = load_paths([config])
    return MeshConfig(ControlPlane(make_ca(tmp_path), config=loaded), config, loaded)


def services(mc: MeshConfig) -> dict[str, int]:
    return {
        ref.name: obj.spec.ports[0].port
        for ref, obj in mc.plane.config.objects.items()
        if isinstance(obj, Service)
    }


def test_reload_replaces_what_the_folder_says_and_keeps_applied_objects(tmp_path: Path) -> None:
    mc = mesh_config(tmp_path)
    mc.apply_text(SVC.format(name="cli", port=90), "cli.yaml")
    mc.label_object("Namespace", "", "shop", "team", "x")
    (mc.config_dir / "a.yaml").write_text(SVC.format(name="a", port=81))
    (mc.config_dir / "b.yaml").write_text(SVC.format(name="b", port=82))
    assert mc.reload() is True
    assert services(mc) == {"a": 81, "b": 82, "cli": 90}
    # an object the edit did not touch keeps its live label
    assert mc.plane.config.objects[Ref("Namespace", "", "shop")].meta.labels["team"] == "x"
    (mc.config_dir / "b.yaml").unlink()
    assert mc.reload() is True
    assert services(mc) == {"a": 81, "cli": 90}
    assert mc.reload() is False  # nothing changed


def test_a_bad_edit_is_refused_with_its_field_path_and_nothing_changes(tmp_path: Path) -> None:
    mc = mesh_config(tmp_path)
    before = mc.plane.snapshot
    bad = mc.config_dir / "a.yaml"
    bad.write_text(SVC.format(name="a", port=70000))
    with pytest.raises(ConfigError) as refused:
        mc.reload()
    assert f"{bad}:1: Service/a: spec.ports[0].port: must be between 1 and 65535" in str(
        refused.value
    )
    assert mc.plane.snapshot is before and services(mc) == {"a": 80}


def test_the_journal_replays_cli_changes_after_a_restart(tmp_path: Path) -> None:
    config = folder(tmp_path)
    journal = tmp_path / "changes.jsonl"
    loaded = load_paths([config])
    first = MeshConfig(
        ControlPlane(make_ca(tmp_path), config=loaded), config, loaded, journal=journal
    )
    first.apply_text(SVC.format(name="cli", port=90), "cli.yaml")
    first.delete_text(SVC.format(name="a", port=80), "a.yaml")
    first.label_object("Namespace", "", "shop", "team", "x")
    again = MeshConfig(
        ControlPlane(make_ca(tmp_path), config=loaded), config, loaded, journal=journal
    )
    assert again.replay() == 3
    assert services(again) == {"cli": 90}
    assert again.plane.config.objects[Ref("Namespace", "", "shop")].meta.labels["team"] == "x"


async def test_a_burst_of_writes_is_one_reload_after_the_quiet_period(tmp_path: Path) -> None:
    config = folder(tmp_path)
    reloaded = asyncio.Event()
    calls: list[float] = []
    loop = asyncio.get_running_loop()

    def on_change() -> None:
        calls.append(loop.time())
        reloaded.set()

    watcher = FolderWatcher(config, on_change, interval=0.02, quiet=0.2)
    watcher.start()
    try:
        started = loop.time()
        for port in range(81, 86):  # five writes 50 ms apart: never 200 ms quiet
            (config / "a.yaml").write_text(SVC.format(name="a", port=port))
            await asyncio.sleep(0.05)
        last_write = loop.time()
        await asyncio.wait_for(reloaded.wait(), 3)
        await asyncio.sleep(0.3)  # no second call follows
        assert len(calls) == 1
        assert calls[0] - last_write >= 0.15 and calls[0] > started
        # touching a file (same content) is no change
        (config / "a.yaml").touch()
        await asyncio.sleep(0.4)
        assert len(calls) == 1
    finally:
        await watcher.close()
