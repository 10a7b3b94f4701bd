"""Shared test helpers: targets, downstreams, real JOSE keys and a real JWKS HTTP server."""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Mapping

from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

from ambient.config.requestauthn import (
    REQUEST_AUTHENTICATION_SPEC,
    RequestAuthentication,
)
from ambient.config.resources import ObjectMeta
from ambient.config.schema import INVALID, Report
from ambient.httpd import AdminServer, Request, Response
from ambient.identity.spiffe import SpiffeId
from ambient.waypoint.model import Downstream, RequestHead, Target

ISSUER = "https://issuer.example.com"


def target(
    service: str | None = "orders", ns: str = "shop", port: int = 8080, ip: str = "127.20.0.5"
) -> Target:
    host = f"{service}.{ns}.svc.cluster.local" if service else None
    return Target(ns, host, ipaddress.ip_address(ip), port)


def peer(
    ns: str = "shop", sa: str = "web", ip: str = "127.10.0.7", td: str = "cluster.local"
) -> Downstream:
    return Downstream(SpiffeId(td, ns, sa), ipaddress.ip_address(ip))


def request(
    path: str = "/", method: str = "GET", authority: str = "orders:8080", **headers: str
) -> RequestHead:
    pairs = tuple((k.replace("_", "-").lower(), v) for k, v in headers.items())
    return RequestHead(method, authority, path, pairs)


def rsa_key(kid: str = "rsa-1") -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid}, private=True)


def ec_key(kid: str = "ec-1") -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": kid}, private=True)


def jwks_json(*keys: RSAKey | ECKey) -> str:
    return json.dumps(KeySet(list(keys)).as_dict(private=False))


def token(
    key: RSAKey | ECKey,
    alg: str = "RS256",
    *,
    kid: str | None = "default",
    **claims: object,
) -> str:
    now = int(time.time())
    body: dict[str, object] = {"iss": ISSUER, "sub": "alice", "iat": now, "exp": now + 600}
    body.update(claims)
    header: dict[str, object] = {"alg": alg}
    if kid == "default":
        kid = key.kid
    if kid is not None:
        header["kid"] = kid
    claims_out = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(header, claims_out, key, algorithms=[alg])


def request_authn(
    spec: Mapping[str, object], name: str = "jwt", ns: str = "shop"
) -> RequestAuthentication:
    report = Report()
    parsed = REQUEST_AUTHENTICATION_SPEC.parse(spec, ("spec",), report)
    assert parsed is not INVALID, report.issues
    return RequestAuthentication(ObjectMeta(name, ns), spec=parsed)


class JwksServer:
    """A real HTTP server (ambient.httpd over TCP) serving a JWKS that tests can change."""

    def __init__(self, body: str) -> None:
        self.body = body
        self.status = 200
        self.hits = 0
        self._server = AdminServer({"/jwks.json": self._serve})
        self.uri = ""

    def _serve(self, _request: Request) -> Response:
        self.hits += 1
        return Response(self.status, self.body.encode(), "application/json")

    async def start(self) -> str:
        host, port = await self._server.start("127.0.0.1", 0)
        self.uri = f"http://{host}:{port}/jwks.json"
        return self.uri

    async def close(self) -> None:
        await self._server.close()
