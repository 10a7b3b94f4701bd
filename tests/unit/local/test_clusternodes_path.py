"""``ambient_on_path``: the waypoint pods' ``ambient`` resolves on the PATH pods inherit."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from ambient.local.clusternodes import ambient_on_path


def test_appended_when_missing_and_left_alone_when_present(tmp_path: Path) -> None:
    ours = Path(sys.executable).parent
    if not os.access(ours / "ambient", os.X_OK):
        pytest.skip(f"no ambient script next to {sys.executable} (not a virtualenv install)")
    environ = {"PATH": str(tmp_path)}
    assert ambient_on_path(environ) == str(ours)
    assert environ["PATH"] == f"{tmp_path}{os.pathsep}{ours}"  # appended: python3 unchanged
    assert shutil.which("ambient", path=environ["PATH"]) == str(ours / "ambient")
    again = dict(environ)
    assert ambient_on_path(again) is None  # resolvable: nothing added
    assert again == environ
    elsewhere = tmp_path / "bin"
    elsewhere.mkdir()
    (elsewhere / "ambient").write_text("#!/bin/sh\n")
    (elsewhere / "ambient").chmod(0o755)
    other = {"PATH": str(elsewhere)}
    assert ambient_on_path(other) is None  # another ambient on PATH is the image's
    assert other == {"PATH": str(elsewhere)}
