"""A gRPC test service on grpcio (a peer we did not write), with raw-bytes messages: no protoc.

Service ``grpcapp.Echo`` (every message is bytes; the client passes no serializers):

- ``Unary``: answers ``<server name>|<request>``; initial metadata ``x-served-by``,
  trailing metadata ``x-trailer: done``; a request ``fail:<code>`` aborts with that
  status (no message: a trailers-only answer).
- ``ServerStream``: request ``<count>,<size>``: ``count`` messages of ``size`` bytes.
- ``ClientStream``: answers the total size of the messages received, as ASCII.
- ``Bidi``: echoes every message as it comes.
- ``Sleep``: request ``<ms>``: answers after that long, unless cancelled (the server
  counts cancelled calls; the caller's deadline and cancellation reach it only if
  every proxy on the way propagates them).
- ``Stats``: ``cancelled=<n> calls=<n> deadlines=<seconds left when each call with a
  deadline came, comma-separated>`` as ASCII.

``serve(address, port, name)`` runs it on the current asyncio loop (grpc.aio);
``python3 echo.py --port P [--name N]`` runs it as a pod's program (on ``$POD_IP``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import grpc.aio

SERVICE = "grpcapp.Echo"
MAX_MESSAGE = 16 * 1024 * 1024


@dataclass
class Stats:
    calls: int = 0
    cancelled: int = 0
    deadlines: list[float] = field(default_factory=list)  # seconds left when calls came


class Echo:
    def __init__(self, name: str) -> None:
        self.name = name
        self.stats = Stats()

    def _seen(self, context: grpc.aio.ServicerContext) -> None:
        self.stats.calls += 1
        left = context.time_remaining()  # from grpc-timeout (grpcio hides the header itself)
        if left is not None:
            self.stats.deadlines.append(left)

    async def unary(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self._seen(context)
        if request.startswith(b"fail:"):
            await context.abort(_code(int(request[5:])), "failed on request")
        await context.send_initial_metadata((("x-served-by", self.name),))
        context.set_trailing_metadata((("x-trailer", "done"),))
        return self.name.encode() + b"|" + request

    async def server_stream(
        self, request: bytes, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        self._seen(context)
        count, size = (int(x) for x in request.split(b","))
        chunk = b"s" * size
        for _ in range(count):
            yield chunk

    async def client_stream(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> bytes:
        self._seen(context)
        total = 0
        async for message in requests:
            total += len(message)
        return str(total).encode()

    async def bidi(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        self._seen(context)
        async for message in requests:
            yield message

    async def sleep(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self._seen(context)
        try:
            await asyncio.sleep(int(request) / 1000)
        except asyncio.CancelledError:
            self.stats.cancelled += 1
            raise
        return b"slept"

    async def stats_call(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        s = self.stats
        deadlines = ",".join(f"{d:.3f}" for d in s.deadlines)
        return f"cancelled={s.cancelled} calls={s.calls} deadlines={deadlines}".encode()

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Unary": grpc.unary_unary_rpc_method_handler(self.unary),
                "ServerStream": grpc.unary_stream_rpc_method_handler(self.server_stream),
                "ClientStream": grpc.stream_unary_rpc_method_handler(self.client_stream),
                "Bidi": grpc.stream_stream_rpc_method_handler(self.bidi),
                "Sleep": grpc.unary_unary_rpc_method_handler(self.sleep),
                "Stats": grpc.unary_unary_rpc_method_handler(self.stats_call),
            },
        )


def _code(number: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code
    raise ValueError(f"no gRPC status {number}")


OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
]


async def serve(address: str, port: int, name: str) -> tuple[grpc.aio.Server, Echo]:
    """Start the service on ``address:port`` (the caller stops it with ``server.stop(0)``)."""
    echo = Echo(name)
    server = grpc.aio.server(options=OPTIONS)
    server.add_generic_rpc_handlers((echo.handler(),))
    if server.add_insecure_port(f"{address}:{port}") == 0:
        raise OSError(f"cannot listen on {address}:{port}")
    await server.start()
    return server, echo


def method(name: str) -> str:
    return f"/{SERVICE}/{name}"


async def _main() -> None:
    parser = argparse.ArgumentParser(description="the grpcapp.Echo test server")
    parser.add_argument("--port", type=int, default=50051)
    parser.add_argument("--name", default=os.environ.get("POD_NAME", "echo"))
    args = parser.parse_args()
    server, _ = await serve(os.environ.get("POD_IP", "127.0.0.1"), args.port, args.name)
    print(f"grpcapp {args.name} serving on port {args.port}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(_main())
