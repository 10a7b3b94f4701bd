"""Progress: a live display on a terminal, nothing (or plain lines) elsewhere."""

from __future__ import annotations

import io
import logging
import os
import re

import pytest

from ambient.progress import is_terminal, progress

ANSI = re.compile(r"\x1b\[")


def test_in_a_script_nothing_is_written() -> None:
    out = io.StringIO()
    with progress("building", stream=out) as reporter:
        reporter.step("step two")
        reporter.count(1, 3)
        reporter.note("a note")
        assert reporter.live is False
    assert out.getvalue() == ""


def test_lines_mode_writes_plain_stamped_lines_without_counts() -> None:
    out = io.StringIO()
    with progress("building", stream=out, lines=True, prefix="dev-cluster ") as reporter:
        reporter.count(1, 3)
        reporter.note("built")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r"\[dev-cluster +\d+\.\ds\] building", lines[0])
    assert lines[1].endswith("] built")
    assert not ANSI.search(out.getvalue())


def test_on_a_terminal_the_display_shows_steps_counts_and_keeps_notes() -> None:
    out = io.StringIO()
    with progress("starting", stream=out, terminal=True) as reporter:
        assert reporter.live is True
        reporter.step("pods ready")
        reporter.count(2, 5)
        reporter.note("all 5 pod(s) ready")
    text = out.getvalue()
    assert ANSI.search(text)
    assert "all 5 pod(s) ready" in text
    assert "pods ready" in text and "2/5" in text


def test_log_records_print_above_the_display(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    handler = logging.StreamHandler(out)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with progress("starting", terminal=True):
            assert handler.stream is not out  # rich's proxy, which prints above the display
            logging.getLogger("ambient.test").warning("a warning meanwhile")
        assert handler.stream is out
    finally:
        root.removeHandler(handler)
    assert "a warning meanwhile" in out.getvalue()


def test_a_pseudo_terminal_is_a_terminal_unless_term_is_dumb(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    leader, follower = os.openpty()
    try:
        with open(follower, "w", closefd=False) as tty:
            monkeypatch.setenv("TERM", "xterm")
            assert is_terminal(tty)
            monkeypatch.setenv("TERM", "dumb")
            assert not is_terminal(tty)
    finally:
        os.close(leader)
        os.close(follower)
    assert not is_terminal(io.StringIO())


def test_dev_cluster_messages_under_way_are_steps_and_the_rest_stay() -> None:
    from ambient.devcluster.cli import progress_of

    out = io.StringIO()
    with progress(stream=out, terminal=True) as reporter:
        report = progress_of(reporter)
        report("[1/5] go build k8s.io/kubernetes/cmd/kube-apiserver ...")
        report("[1/5] kube-apiserver: 300 s (total 300 s)")
    text = out.getvalue()
    # The step is drawn on the live line and cleared; the finished line is printed to stay.
    assert "go build" in text
    kept = text.rsplit("\x1b[2K", 1)[0]
    assert "kube-apiserver: 300 s (total 300 s)" in kept


def test_install_counts_the_objects_it_applies() -> None:
    from ambient.cli.install import _counting

    out = io.StringIO()
    with progress(stream=out, terminal=True) as reporter:
        report = _counting(reporter, 3)
        report("applied CustomResourceDefinition/gateways.gateway.networking.k8s.io")
        report("2 CRDs established")
        report("applied Namespace/istio-system")
    text = out.getvalue()
    assert "2/3" in text
    assert "2 CRDs established" in text
    quiet = io.StringIO()
    with progress(stream=quiet) as reporter:
        _counting(reporter, 1)("applied Namespace/istio-system")
    assert quiet.getvalue() == ""


def test_install_shows_the_wait_for_the_crds_as_a_counted_step() -> None:
    from ambient.cli.install import _counting

    out = io.StringIO()
    with progress(stream=out, terminal=True) as reporter:
        report = _counting(reporter, 5)
        report("applied CustomResourceDefinition/gateways.gateway.networking.k8s.io")
        report("waiting for 4 CRDs to be established")
        report("established CustomResourceDefinition/gateways.gateway.networking.k8s.io")
    text = out.getvalue()
    live = text.rsplit("\x1b[2K", 1)[0]  # the live line, before it is cleared
    assert "waiting for 4 CRDs to be established" in live and "1/4" in live
    assert "1/5" not in live.rsplit("waiting for", 1)[-1]
    quiet = io.StringIO()
    with progress(stream=quiet) as reporter:
        report = _counting(reporter, 5)
        report("waiting for 4 CRDs to be established")
        report("established CustomResourceDefinition/gateways.gateway.networking.k8s.io")
        report("4 CRDs established")
    assert quiet.getvalue() == ""
