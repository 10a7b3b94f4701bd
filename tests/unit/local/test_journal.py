"""The journal of ambient apply/delete/label: a torn tail never costs an acknowledged change.

Real files and, for the crash, a real process killed in the middle of an append.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ambient.config import load_paths
from ambient.controlplane import ControlPlane
from ambient.local.configops import MeshConfig
from ambient.local.journal import Journal, JournalError
from tests.pki import make_ca
from tests.unit.local.test_hot_reload import SVC, folder, services


def restart(tmp_path: Path, journal: Path) -> MeshConfig:
    """A control plane started again from the folder, replaying ``journal``."""
    config = tmp_path / "config"
    loaded = load_paths([config])
    mc = MeshConfig(ControlPlane(make_ca(tmp_path), config=loaded), config, loaded, journal=journal)
    mc.replay()
    return mc


CRASH_MID_APPEND = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from ambient.local.journal import Journal

    journal = Journal(Path(sys.argv[1]))
    journal.append({"op": "label", "kind": "Namespace", "namespace": "", "name": "shop",
                    "key": "first", "value": "1"})
    print("acknowledged", flush=True)
    real_write = os.write

    def torn(fd, data):  # the power goes out half-way through the next record
        real_write(fd, data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)

    os.write = torn
    journal.append({"op": "label", "kind": "Namespace", "namespace": "", "name": "shop",
                    "key": "torn", "value": "2"})
    """
)


def test_a_crash_mid_append_loses_only_the_unacknowledged_change(tmp_path: Path) -> None:
    """A process killed half-way through writing a record leaves a torn line. The next
    start repairs it; the change acknowledged after that start survives the one after."""
    folder(tmp_path)
    journal = tmp_path / "changes.jsonl"
    child = subprocess.run(
        [sys.executable, "-c", CRASH_MID_APPEND, str(journal)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == -9 and child.stdout == "acknowledged\n", child.stderr
    assert not journal.read_bytes().endswith(b"\n")  # torn
    mc = restart(tmp_path, journal)
    labels = mc.plane.config.objects
    shop = next(o for r, o in labels.items() if r.kind == "Namespace")
    assert shop.meta.labels.get("first") == "1" and "torn" not in shop.meta.labels
    mc.apply_text(SVC.format(name="after", port=91), "after.yaml")  # acknowledged
    again = restart(tmp_path, journal)
    assert services(again) == {"a": 80, "after": 91}


def test_a_torn_tail_written_by_an_older_version_is_repaired(tmp_path: Path) -> None:
    folder(tmp_path)
    journal = tmp_path / "changes.jsonl"
    line = json.dumps({"op": "apply", "text": SVC.format(name="old", port=92), "filename": "x"})
    journal.write_text(line + "\n" + line[:25])  # bare JSON lines, the last one torn
    mc = restart(tmp_path, journal)
    mc.apply_text(SVC.format(name="after", port=91), "after.yaml")
    assert services(restart(tmp_path, journal)) == {"a": 80, "old": 92, "after": 91}


def test_a_torn_last_line_with_its_newline_is_dropped_too(tmp_path: Path) -> None:
    """Blocks written out of order: the newline made it, part of the record did not."""
    journal = Journal(tmp_path / "j")
    journal.append({"op": "one"})
    journal.append({"op": "two"})
    data = journal.path.read_bytes()
    cut = data.rindex(b'"two"')
    journal.path.write_bytes(data[:cut] + b"\0" * 5 + data[cut + 5 :])
    assert journal.read() == [{"op": "one"}]
    journal.append({"op": "three"})
    assert journal.read() == [{"op": "one"}, {"op": "three"}]


def test_damage_before_the_last_record_stops_the_start(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    for op in ("one", "two", "three"):
        journal.append({"op": op})
    lines = journal.path.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b"two", b"tw0")
    journal.path.write_bytes(b"\n".join(lines))
    with pytest.raises(JournalError, match=r"j:2: damaged record"):
        journal.read()


def test_a_failed_write_leaves_no_torn_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(tmp_path / "j")
    journal.append({"op": "one"})
    size = journal.path.stat().st_size
    real_write = os.write

    def full_disk(fd: int, data: bytes) -> int:
        real_write(fd, data[:7])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(OSError):
        journal.append({"op": "two"})
    monkeypatch.setattr(os, "write", real_write)
    assert journal.path.stat().st_size == size
    journal.append({"op": "three"})
    assert journal.read() == [{"op": "one"}, {"op": "three"}]


def test_a_record_is_flushed_before_append_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fsync of the record (and, for a new journal, of its folder) before the caller acks."""
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    journal = Journal(tmp_path / "j")
    journal.append({"op": "one"})
    assert synced == [str(journal.path), str(tmp_path)]
    journal.append({"op": "two"})
    assert synced[2:] == [str(journal.path)]
