"""scripts/dev-cluster refuses bad folders with one clear line, before building anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from ambient.devcluster.cli import main


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def test_a_file_is_not_a_cluster_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert _run(capsys, "up", str(a_file)) == (
        1,
        f"dev-cluster: error: {a_file} exists and is not a folder\n",
    )


def test_a_folder_of_other_files_is_refused_and_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    code, err = _run(capsys, "up", str(tmp_path))
    assert code == 1 and "is not empty and holds no dev cluster (notes.txt)" in err
    code, err = _run(capsys, "down", str(tmp_path))
    assert code == 1 and f"no dev cluster in {tmp_path}" in err
    assert (tmp_path / "notes.txt").read_text() == "mine"  # down never deletes what it did not make


def test_an_unwritable_place_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(capsys, "up", "/proc/self/no-such-dir/cluster")
    assert code == 1 and "cannot create the cluster folder /proc/self/no-such-dir/cluster" in err


def test_down_of_a_missing_folder_is_a_no_op(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["down", str(tmp_path / "never")]) == 0
    assert "nothing to do" in capsys.readouterr().out
