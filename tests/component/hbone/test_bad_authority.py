"""A CONNECT with a malformed ``:authority`` is one 400; its connection and other streams live on."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ambient.hbone.client import connect
from ambient.hbone.errors import StreamRefused
from ambient.hbone.messages import ConnectRequest, SocketAddress
from ambient.identity.certs import WorkloadCertificate
from tests.component.hbone.harness import ForwardingServer, Upstream, read_all


@dataclass(frozen=True, slots=True)
class RawAuthority(ConnectRequest):
    """A CONNECT whose ``:authority`` is sent as given (our client never sends such)."""

    raw: bytes = b""

    def to_headers(self) -> list[tuple[str, str]]:
        return [(":method", "CONNECT"), (":authority", self.raw)]  # type: ignore[list-item]


@pytest.mark.parametrize(
    "authority",
    [
        "127.0.0.1:²".encode("latin-1"),  # one byte, 0xB2: "²" once decoded as latin-1
        "127.0.0.1:¹²³".encode("latin-1"),
        "127.0.0.1:٣٣".encode(),
        b"[fe80::1%eth0]:80",
        b"127.0.0.1:" + b"9" * 5000,  # int() refuses over 4300 digits
    ],
)
async def test_a_bad_authority_is_one_400(
    hbone_server: ForwardingServer,
    upstream: Upstream,
    server_cert: WorkloadCertificate,
    client_cert: WorkloadCertificate,
    authority: bytes,
) -> None:
    assert hbone_server.address is not None
    conn = await connect(hbone_server.address, client_cert, [server_cert.identity])
    try:
        good = ConnectRequest(authority=SocketAddress.parse(f"127.0.0.1:{upstream.port}"))
        first, first_response = conn.start_stream(good)
        first = await conn.finish_stream(first, first_response)
        bad = RawAuthority(authority=good.authority, raw=authority)
        stream, response = conn.start_stream(bad)
        with pytest.raises(StreamRefused) as refused:
            await conn.finish_stream(stream, response)
        assert refused.value.status == 400
        # The stream opened before and one opened after both still work.
        second, second_response = conn.start_stream(good)
        second = await conn.finish_stream(second, second_response)
        for tunnel in (first, second):
            tunnel.write(b"ping")
            tunnel.write_eof()
            assert await read_all(tunnel) == b"ping"
        assert not conn.closed
    finally:
        conn.close("test done")
