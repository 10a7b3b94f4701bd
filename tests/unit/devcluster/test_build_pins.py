"""The pins the dev cluster builds from, and how the Go toolchain is chosen."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from ambient.devcluster.build import PINS_DIR, Pins, binaries_if_built
from ambient.gomod import GoNotFound, cache_root, find_go, parse_go_version


def test_pins_name_one_release_for_every_staging_module() -> None:
    pins = Pins.load()
    assert re.fullmatch(r"v1\.\d+\.\d+", pins.kubernetes)
    assert pins.etcd.startswith("v3.")
    gomod = (PINS_DIR / "go.mod").read_text()
    replaced = re.findall(r"^\s*(k8s\.io/\S+) => (k8s\.io/\S+) (v\S+)$", gomod, re.MULTILINE)
    assert len(replaced) >= 30
    minor = pins.kubernetes.split(".")[1]
    for old, new, version in replaced:
        assert old == new
        assert version == f"v0.{minor}.{pins.kubernetes.split('.')[2]}", old
    for module in ("k8s.io/api", "k8s.io/client-go", "k8s.io/kubectl", "k8s.io/apiserver"):
        assert module in {old for old, _, _ in replaced}


def test_version_ldflags_make_kubectl_report_the_release() -> None:
    pins = Pins("v1.37.2", "v3.7.0", "k")
    flags = pins.ldflags("2026-01-01T00:00:00Z")
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert f"-X {package}.gitVersion=v1.37.2" in flags
        assert f"-X {package}.gitMajor=1" in flags
        assert f"-X {package}.gitMinor=37" in flags


def test_a_pin_change_is_a_new_cache_key(tmp_path: Path) -> None:
    for name in ("go.mod", "go.sum"):
        (tmp_path / name).write_text((PINS_DIR / name).read_text())
    same = Pins.load(tmp_path)
    assert same == Pins.load()
    (tmp_path / "go.sum").write_text((PINS_DIR / "go.sum").read_text() + "\n")
    assert Pins.load(tmp_path).key != same.key


def test_cache_root_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AMBIENT_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    assert binaries_if_built() is None  # an empty cache holds no build
    monkeypatch.delenv("AMBIENT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_root() == tmp_path / "x" / "ambient"


def test_parse_go_version() -> None:
    assert parse_go_version("go1.26.8\n") == (1, 26, 8)
    assert parse_go_version("go1.26") == (1, 26, 0)
    assert parse_go_version("devel +abc") is None


def _fake_go(path: Path, version: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho {version}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_the_newest_go_wins_over_an_older_one_first_on_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    old = _fake_go(tmp_path / "old" / "go", "go1.19.8")
    new = _fake_go(tmp_path / "new" / "go", "go1.30.1")
    monkeypatch.setenv("PATH", f"{old.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("GO", str(new))
    assert find_go((1, 26)).path == new


def test_no_go_new_enough_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    old = _fake_go(tmp_path / "old" / "go", "go1.19.8")
    monkeypatch.setenv("GO", str(old))
    with pytest.raises(GoNotFound, match=r"no Go toolchain >= go1\.99 .*newest found"):
        find_go((1, 99))
