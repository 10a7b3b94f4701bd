"""The seed guide's Section 7 over real HTTP: JWT valid -> 200, invalid -> 401, missing -> 403.

Real parts: tokens signed by joserfc (RSA), the JWKS served over HTTP by
``ambient.httpd``, requests sent by curl. The HTTP front here is a few lines of
h11 standing in for the waypoint proxy (owned by ``waypoint.proxy``); every
decision comes from ``policy.gate.admit``, which ``Forwarder.handle`` runs for
every request, with the product's authenticator and authorizer.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator

import h11
import pytest

from ambient.waypoint.model import RequestHead
from ambient.waypoint.policy.authorization import WaypointAuthorizer, compile_authorization_policy
from ambient.waypoint.policy.gate import admit
from ambient.waypoint.policy.jwt import JwtAuthenticator
from ambient.waypoint.policy.targets import WaypointRef
from tests.unit.waypoint.policy.helpers import (
    ISSUER,
    JwksServer,
    jwks_json,
    peer,
    request_authn,
    rsa_key,
    target,
    token,
)

KEY = rsa_key("flow-1")
ORDERS = [{"kind": "Service", "group": "", "name": "orders"}]


class Front:
    """Minimal HTTP/1.1 front: parse a request, ask ``admit``, answer."""

    def __init__(self, authn: JwtAuthenticator, authz: WaypointAuthorizer) -> None:
        self.authn, self.authz = authn, authz
        self.forwarded: list[tuple[tuple[str, str], ...]] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        event: object = h11.NEED_DATA
        while not isinstance(event, h11.Request):
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            event = conn.next_event()
        headers = tuple((k.decode().lower(), v.decode()) for k, v in event.headers if k != b"host")
        host = dict(event.headers)[b"host"].decode()
        head = RequestHead(event.method.decode(), host, event.target.decode(), headers)
        admission = await admit(self.authn, self.authz, target(), peer(), head)
        if admission.refusal is not None:
            status, body = admission.refusal.status, admission.refusal.body
            extra = list(admission.refusal.headers)
        else:
            self.forwarded.append(admission.request.headers)
            status, body, extra = 200, b"ok", []
        out = [*extra, ("content-length", str(len(body))), ("connection", "close")]
        writer.write(conn.send(h11.Response(status_code=status, headers=out)))
        writer.write(conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
        await writer.drain()
        writer.close()


@pytest.fixture
async def front() -> AsyncIterator[tuple[Front, str]]:
    jwks = JwksServer(jwks_json(KEY))
    uri = await jwks.start()
    authn = JwtAuthenticator(
        [request_authn({"targetRefs": ORDERS, "jwtRules": [{"issuer": ISSUER, "jwksUri": uri}]})],
        WaypointRef("shop", "waypoint"),
    )
    spec = {
        "targetRefs": ORDERS,
        "action": "ALLOW",
        "rules": [{"from": [{"source": {"requestPrincipals": ["*"]}}]}],
    }
    policy = compile_authorization_policy("orders-require-jwt", "shop", spec).policy
    assert policy is not None
    app = Front(authn, WaypointAuthorizer([policy], WaypointRef("shop", "waypoint")))
    server = await asyncio.start_server(app.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield app, f"http://127.0.0.1:{port}/api/orders"
    server.close()
    await server.wait_closed()
    await authn.aclose()
    await jwks.close()


async def curl(url: str, *headers: str) -> tuple[int, str]:
    args = ["-s", "-o", "-", "-w", "\n%{http_code}", url]
    for header in headers:
        args += ["-H", header]
    proc = await asyncio.create_subprocess_exec(
        "curl", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    body, _, code = out.decode().rpartition("\n")
    return int(code), body


pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


async def test_valid_token_200(front: tuple[Front, str]) -> None:
    app, url = front
    assert await curl(url, f"Authorization: Bearer {token(KEY)}") == (200, "ok")
    assert all(k != "authorization" for k, _ in app.forwarded[0])  # token not forwarded


async def test_invalid_token_401(front: tuple[Front, str]) -> None:
    _, url = front
    assert await curl(url, f"Authorization: Bearer {token(rsa_key('flow-1'))}") == (
        401,
        "Jwt verification fails",
    )
    assert await curl(url, f"Authorization: Bearer {token(KEY, exp=1)}") == (401, "Jwt is expired")


async def test_missing_token_403(front: tuple[Front, str]) -> None:
    _, url = front
    assert await curl(url) == (403, "RBAC: access denied")
