"""``read_lines``: one read of a log file, by both sides of ``ambient logs``."""

from __future__ import annotations

from pathlib import Path

from ambient.runtime.podlogs import LogSource, read_lines


def test_last_lines_then_appended_complete_lines_only(tmp_path: Path) -> None:
    path = tmp_path / "ns_pod_app.log"
    path.write_text("--- 2026-01-01T00:00:00Z ambient: started ---\none\ntwo\nthr")
    source = LogSource("pod", "app", path)
    lines, offset = read_lines(source, count=1)
    assert lines == ["two"]  # the unfinished line is not shown...
    assert offset == len(path.read_bytes()) - len(b"thr")
    with path.open("a") as handle:
        handle.write("ee\nfour\n")
    lines, offset = read_lines(source, offset=offset)
    assert lines == ["three", "four"]  # ...it is, whole, once finished
    assert read_lines(source, offset=offset) == ([], offset)
    path.write_text("new\n")  # replaced by a shorter file: read from its start
    assert read_lines(source, offset=offset) == (["new"], 4)


def test_missing_file_and_tail_zero(tmp_path: Path) -> None:
    source = LogSource("pod", "app", tmp_path / "none.log")
    assert read_lines(source, count=5) == ([], 0)
    (tmp_path / "none.log").write_text("a\nb\n")
    assert read_lines(source, count=0) == ([], 4)


def test_a_waypoint_source_keeps_its_tagged_lines(tmp_path: Path) -> None:
    path = tmp_path / "istio-system_ztunnel-n1_istio-proxy.log"
    path.write_text(
        "10:00:00 INFO  ambient.ztunnel  up\n"
        "10:00:01 INFO  ambient.access [shop/waypoint]  request complete\n"
        "10:00:02 INFO  ambient.access [shop/other]  request complete\n"
    )
    source = LogSource("waypoint-1", "waypoint", path, workload="shop/waypoint")
    assert read_lines(source)[0] == [
        "10:00:01 INFO  ambient.access [shop/waypoint]  request complete"
    ]
