"""The contained h2 fixes: received frames are formatted for h2's trace log only when
a logger formats the message."""

from __future__ import annotations

import h2.config
import h2.connection
import hyperframe.frame
import pytest

from ambient.hbone import _h2compat
from tests.unit.hbone.pair import Pair


def test_hbone_streams_format_no_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    """h2 used to call ``repr(frame)`` for every received frame (four per stream, 5-7 µs
    each) although its default logger drops the message."""
    pair = Pair()
    formatted: list[str] = []
    original = hyperframe.frame.Frame.__repr__

    def counting(frame: hyperframe.frame.Frame) -> str:
        text = original(frame)
        formatted.append(text)
        return text

    monkeypatch.setattr(hyperframe.frame.Frame, "__repr__", counting)
    for _ in range(3):
        stream_id = pair.open()
        pair.client.send(stream_id, b"x")
        pair.client.end_stream(stream_id)
        pair.server.send(stream_id, b"y")
        pair.server.end_stream(stream_id)
        pair.pump()
    assert formatted == []


class Recorder:
    """A logger for h2 that formats what it is given, as a real one would."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def debug(self, fmt: str, *args: object) -> None:
        self.lines.append(fmt % args)

    trace = debug


def test_a_formatting_logger_still_gets_the_frame_text() -> None:
    _h2compat.install()
    recorder = Recorder()
    config = h2.config.H2Configuration(logger=recorder)  # type: ignore[arg-type]
    client = h2.connection.H2Connection(config)
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    received = [line for line in recorder.lines if line.startswith("Received frame: ")]
    assert received and received[0].startswith("Received frame: SettingsFrame(stream_id=0, ")
