"""Memory of a long-lived HBONE connection does not grow with the streams it has carried."""

from __future__ import annotations

import gc
import tracemalloc

from ambient.hbone.core import CLOSED_STREAMS_KEPT

from .pair import Pair


def _carry(pair: Pair, streams: int) -> None:
    """Open, use and close ``streams`` tunnels one after the other, as a pooled connection does."""
    for _ in range(streams):
        sid = pair.open()
        pair.client.send(sid, b"GET / HTTP/1.1\r\n\r\n")
        pair.server.send(sid, b"HTTP/1.1 200 OK\r\n\r\n")
        pair.client.end_stream(sid)
        pair.server.end_stream(sid)
        pair.pump()
    assert pair.client.open_streams == pair.server.open_streams == 0


def test_closed_streams_cost_no_memory_past_the_bound() -> None:
    """h2 alone remembers 65,536 closed streams per connection (~150 bytes each, both
    sides): a pooled tunnel grew by ~300 bytes per stream it carried."""
    pair = Pair()
    tracemalloc.start()
    try:
        _carry(pair, CLOSED_STREAMS_KEPT + 100)  # past the bound: from here on, steady state
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        _carry(pair, 2000)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 2000 * 100, f"{grown} bytes more after 2,000 more streams"
