"""``ambient up``'s progress: shown on a terminal (pods becoming ready, then one line that
stays), absent when its output goes to a file, as in scripts."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

from tests.e2e.harness import AMBIENT, Mesh, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]  # a mesh started twice

SHOP = Path(__file__).resolve().parents[2] / "examples" / "shop"
ANSI = re.compile(rb"\x1b\[")
READY_LINE = re.compile(r"all (\d+) pod\(s\) ready in [\d.]+ s")


def _mesh(root: Path, runner: tuple[str, ...] = ()) -> Mesh:
    config = root / "shop"
    shutil.copytree(SHOP, config)
    return Mesh(config, root / "state", root / "up.log", runner=runner)


def test_up_on_a_terminal_shows_the_pods_becoming_ready(tmp_path: Path) -> None:
    mesh = _mesh(tmp_path, runner=(sys.executable, "-m", "tests.e2e.ptyrun", AMBIENT)).start()
    try:
        found = wait_for(
            "the progress display's last line",
            lambda: READY_LINE.search(mesh.log_path.read_text(errors="replace")),
            timeout=120,
            every=0.5,
        )
        assert int(found.group(1)) == len(mesh.pod_states())
        assert ANSI.search(mesh.log_path.read_bytes())  # a live display was drawn
    finally:
        assert mesh.stop() == 0


def test_up_in_a_script_prints_no_progress(tmp_path: Path) -> None:
    mesh = _mesh(tmp_path).start()
    try:
        mesh.ok("status", "--wait", "60")
    finally:
        assert mesh.stop() == 0
    raw = mesh.log_path.read_bytes()
    assert b"mesh is up" in raw
    assert not ANSI.search(raw)
    assert b"pods ready" not in raw and not READY_LINE.search(raw.decode(errors="replace"))
