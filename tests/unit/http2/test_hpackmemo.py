"""The memoised HPACK of the waypoint's HTTP/2 codecs against the ``hpack`` package itself.

A memoised decoder must give what a plain decoder gives for every block of a
connection, including blocks whose bytes repeat after the dynamic table
changed (the same index then names another field); the stateless encoder's
blocks must decode to the fields given, and credentials are never kept.
"""

from __future__ import annotations

import gc
import tracemalloc

import hpack
from hypothesis import given, settings
from hypothesis import strategies as st

from ambient.http2 import hpackmemo
from ambient.http2.hpackmemo import MemoDecoder, decode_plain, encode_fields, encode_literal

_FIELD = st.tuples(
    st.sampled_from([":path", "content-type", "te", "x-id", "grpc-status", "user-agent"]),
    st.sampled_from(["/a", "/b", "application/grpc", "trailers", "0", "1", "é", "v" * 40]),
)


def plain(decoder: hpack.Decoder, block: bytes) -> tuple[tuple[str, str], ...]:
    return tuple(
        (n.decode("latin-1"), v.decode("latin-1")) for n, v in decoder.decode(block, raw=True)
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_FIELD, min_size=1, max_size=5), max_size=12), st.data())
def test_memo_decoding_equals_hpack_for_every_block(
    heads: list[list[tuple[str, str]]], data: st.DataObject
) -> None:
    encoder = hpack.Encoder()
    memo, reference = MemoDecoder(65536), hpack.Decoder(65536)
    for head in heads:
        if data.draw(st.booleans()):  # an encoder table resize now and then
            encoder.header_table_size = data.draw(st.sampled_from([0, 64, 4096]))
        block = encoder.encode(head)
        assert memo.decode(block) == plain(reference, block)


def test_a_repeated_block_after_a_table_change_is_decoded_again() -> None:
    encoder = hpack.Encoder()
    memo, reference = MemoDecoder(65536), hpack.Decoder(65536)
    first = encoder.encode([("x-id", "1")])  # inserts x-id: 1 at index 62
    again = encoder.encode([("x-id", "1")])  # b"\xbe": index 62
    assert memo.decode(first) == plain(reference, first)
    assert memo.decode(again) == plain(reference, again) == (("x-id", "1"),)
    other = encoder.encode([("x-id", "2")])  # inserts x-id: 2, which is now index 62
    assert memo.decode(other) == plain(reference, other)
    assert memo.decode(again) == plain(reference, again) == (("x-id", "2"),)


def test_encoded_fields_decode_to_themselves_and_secrets_are_not_kept() -> None:
    fields = [(":status", "200"), ("content-type", "application/grpc"), ("x-new", "é"),
              ("authorization", "Bearer secret")]  # fmt: skip
    block = encode_fields(fields)
    assert plain(hpack.Decoder(), block) == (
        (":status", "200"), ("content-type", "application/grpc"), ("x-new", "é"),
        ("authorization", "Bearer secret"),
    )  # fmt: skip
    assert (("x-new", "é")) in hpackmemo._FIELDS
    assert ("authorization", "Bearer secret") not in hpackmemo._FIELDS
    assert encode_fields(fields) == block  # from the memo, the same bytes


def test_the_memo_of_a_connection_is_bounded_in_bytes() -> None:
    """64 distinct blocks near the header list size (literals never indexed: the table
    does not change) are decoded, but the decoder does not keep them all: it kept
    ~8 MiB, for as long as the connection lived."""
    decoder = MemoDecoder(65536)
    encoder = hpack.Encoder()
    blocks = [
        encoder.encode(
            [hpack.NeverIndexedHeaderTuple("x-filler", f"{i:04d}" + "v" * 60000)], huffman=False
        )
        for i in range(64)
    ]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i, block in enumerate(blocks):
            assert decoder.decode(block)[0][1].startswith(f"{i:04d}v")
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 3 * hpackmemo.MEMO_BYTES, f"the decoder kept {kept} bytes"


def test_blocks_with_a_credential_or_a_per_request_value_are_never_kept() -> None:
    response = [(":status", "200"), ("content-type", "application/grpc")]
    block = encode_fields(response)
    assert hpackmemo._BLOCKS[tuple(response)] == block  # a repeated block, kept whole
    assert encode_fields(tuple(response)) == block
    for extra in (("authorization", "Bearer secret"), ("x-request-id", "6f9c0d"),
                  ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
                  ("forwarded", 'for="10.0.0.1:54321"')):  # HBONE's: a new port per connection  # fmt: skip
        fields = [*response, extra]
        assert plain(hpack.Decoder(), encode_fields(fields)) == tuple(fields)
        assert tuple(fields) not in hpackmemo._BLOCKS
        assert extra not in hpackmemo._FIELDS


def test_the_encoding_memos_are_bounded() -> None:
    for i in range(hpackmemo.MEMO_OUT_BLOCKS + 10):
        encode_fields([("x-n", str(i))])
    assert len(hpackmemo._BLOCKS) <= hpackmemo.MEMO_OUT_BLOCKS
    assert len(hpackmemo._FIELDS) <= hpackmemo.MEMO_FIELDS
    assert encode_fields([("x-n", "1")]) == encode_fields((("x-n", "1"),))


# -- decode_plain: blocks that need no decoder state -----------------------------------------

_names = st.sampled_from([":method", ":authority", "forwarded", "baggage", "user-agent", "x-a"])
_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=300)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_names, _values), max_size=8), st.lists(st.booleans(), max_size=8))
def test_decode_plain_reads_what_encode_fields_writes(
    fields: list[tuple[str, str]], never: list[bool]
) -> None:
    block = b"".join(
        encode_literal(n, v, never_indexed=True) if i < len(never) and never[i]
        else encode_fields([(n, v)])
        for i, (n, v) in enumerate(fields)
    )  # fmt: skip
    expected = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in fields]
    assert decode_plain(block) == expected
    assert [tuple(f) for f in hpack.Decoder().decode(block, raw=True)] == expected


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.binary(max_size=64), st.lists(st.tuples(_names, _values), max_size=4)))
def test_decode_plain_declines_what_needs_a_table_and_never_disagrees_with_hpack(
    raw: bytes | list[tuple[str, str]],
) -> None:
    block = raw if isinstance(raw, bytes) else hpack.Encoder().encode(raw)  # Huffman, indexing
    fields = decode_plain(block)
    if fields is None:
        return
    assert [tuple(f) for f in hpack.Decoder().decode(block, raw=True)] == fields
