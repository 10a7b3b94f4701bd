"""The plugin as a container runtime finds it: installed into a CNI binary folder and exec'd."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ambient.cni.install import install_binary
from tests.cni import HOST_PYTHON, Result, invoke_plugin

Invoke = Callable[..., Result]


@pytest.fixture
def plugin_binary(tmp_path: Path) -> Path:
    if not Path(HOST_PYTHON).is_file():
        pytest.skip(f"the plugin runs with the node's python3: {HOST_PYTHON} is missing")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    return install_binary(bin_dir, HOST_PYTHON)


@pytest.fixture
def invoke(plugin_binary: Path) -> Invoke:
    def call(command: str, config: Any, env: dict[str, str] | None = None) -> Result:
        return invoke_plugin(plugin_binary, command, config, env)

    return call
