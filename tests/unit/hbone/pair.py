"""An in-memory HBONE client/server pair: the sans-io connections wired back to back."""

from __future__ import annotations

from dataclasses import dataclass, field

import h2.config
import h2.connection

from ambient.hbone import events as ev
from ambient.hbone.messages import ConnectRequest, SocketAddress
from ambient.hbone.protocol import HboneConnection, HboneSettings, Side

TARGET = ConnectRequest(SocketAddress.parse("10.0.0.7:8080"))


@dataclass
class Pair:
    """Moves bytes between a client and a server until both are quiet."""

    settings: HboneSettings = field(default_factory=HboneSettings)
    client: HboneConnection = field(init=False)
    server: HboneConnection = field(init=False)

    def __post_init__(self) -> None:
        self.client = HboneConnection(Side.CLIENT, self.settings)
        self.server = HboneConnection(Side.SERVER, self.settings)
        self.client.initiate()
        self.server.initiate()
        self.pump()

    def pump(self) -> tuple[list[ev.Event], list[ev.Event]]:
        """Deliver everything queued; returns (client events, server events)."""
        at_client: list[ev.Event] = []
        at_server: list[ev.Event] = []
        while True:
            to_server = self.client.data_to_send()
            to_client = self.server.data_to_send()
            if not to_server and not to_client:
                return at_client, at_server
            if to_server:
                at_server += self.server.receive_data(to_server)
            if to_client:
                at_client += self.client.receive_data(to_client)

    def open(self, request: ConnectRequest = TARGET, status: int = 200) -> int:
        """Open a stream and have the server answer ``status``."""
        stream_id = self.client.open_stream(request)
        _, at_server = self.pump()
        assert isinstance(at_server[-1], ev.ConnectReceived)
        self.server.respond(stream_id, status)
        at_client, _ = self.pump()
        assert at_client[0] == ev.ResponseReceived(stream_id, status)
        return stream_id


def raw_client() -> h2.connection.H2Connection:
    """A plain h2 client that will send whatever it is told (no outbound validation)."""
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, validate_outbound_headers=False)
    )
    conn.initiate_connection()
    return conn


def received(events: list[ev.Event], stream_id: int) -> int:
    """Tunnel bytes delivered on ``stream_id``."""
    return sum(
        len(e.data) for e in events if isinstance(e, ev.DataReceived) and e.stream_id == stream_id
    )
