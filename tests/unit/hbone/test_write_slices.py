"""HBONE hands its output to the TLS transport in batches of at most 256 KiB.

uvloop's and asyncio's TLS transports encrypt each ``writelines`` call whole into
an OpenSSL memory BIO that keeps its largest size for the life of the connection
(a 4 MiB write left ~5 MB allocated per pooled connection, ``bench/RESULTS.md``);
that memory is not visible from Python, so these tests check the batches given
to the transport (a recording stand-in for it) and the regrouping itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from hypothesis import given
from hypothesis import strategies as st

from ambient.hbone.connection import WRITE_SLICE, HboneTransport, write_slices
from ambient.hbone.protocol import Side

pieces = st.lists(
    st.tuples(st.integers(0, 3000), st.booleans()).map(
        lambda t: memoryview(b"v" * t[0]) if t[1] else b"b" * t[0]
    ),
    max_size=12,
)


@given(buffers=pieces, limit=st.integers(1, 2048))
def test_batches_keep_the_bytes_in_order_within_the_limit(
    buffers: list[bytes | memoryview], limit: int
) -> None:
    batches = write_slices(buffers, limit)
    flat = b"".join(bytes(piece) for batch in batches for piece in batch)
    assert flat == b"".join(bytes(b) for b in buffers)
    assert all(0 < sum(len(p) for p in batch) <= limit for batch in batches)
    assert all(len(piece) > 0 for batch in batches for piece in batch)


def test_large_payloads_are_cut_without_copying() -> None:
    payload = memoryview(bytes(1_000_000))
    batches = write_slices([b"head", payload])
    views = [piece for batch in batches for piece in batch if isinstance(piece, memoryview)]
    assert views and all(view.obj is payload.obj for view in views)


class RecordingTransport(asyncio.Transport):
    """Stand-in for the TLS transport: records each ``writelines`` call's size."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self.calls.append(sum(len(d) for d in list_of_data))

    def is_closing(self) -> bool:
        return False


async def test_a_4_mib_flush_reaches_the_transport_in_slices() -> None:
    conn = HboneTransport(Side.CLIENT)
    transport = RecordingTransport()
    conn._transport = transport
    conn.conn._wire = [memoryview(bytes(4 * 1024 * 1024))]
    conn._flush_now()
    assert sum(transport.calls) == 4 * 1024 * 1024
    assert max(transport.calls) <= WRITE_SLICE
    assert len(transport.calls) == 16
