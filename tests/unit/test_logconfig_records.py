"""Records of the long-running processes gather only what ``logconfig.FORMAT`` prints."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from ambient.logconfig import FORMAT, setup_logging


@pytest.fixture
def restored_flags() -> Iterator[None]:
    flags = (logging.logProcesses, logging.logThreads, logging.logMultiprocessing)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    logging.logProcesses, logging.logThreads, logging.logMultiprocessing = flags
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restored_flags")
def test_records_skip_process_and_thread_names_the_format_does_not_print() -> None:
    setup_logging("info")
    record = logging.getLogger("ambient.access").makeRecord(
        "ambient.access", logging.INFO, "x.py", 1, "src=%s", ("10.0.0.1",), None
    )
    assert record.process is None and record.thread is None
    assert record.processName is None and record.threadName is None
    assert not any(name in FORMAT for name in ("process", "thread"))
    record.workload = ""
    line = logging.Formatter(FORMAT, "%H:%M:%S").format(record)
    assert line.endswith("INFO  ambient.access  src=10.0.0.1")
