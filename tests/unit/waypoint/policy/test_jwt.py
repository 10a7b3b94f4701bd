"""RequestAuthentication: real tokens (joserfc RSA and EC keys), a real JWKS over HTTP."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator

import pytest

from ambient.waypoint.model import AuthnResult
from ambient.waypoint.policy.jwks import JwksCache, JwksError, fetch_jwks
from ambient.waypoint.policy.jwt import JwtAuthenticator
from ambient.waypoint.policy.targets import WaypointRef
from tests.unit.waypoint.policy.helpers import (
    ISSUER,
    JwksServer,
    ec_key,
    jwks_json,
    request,
    request_authn,
    rsa_key,
    target,
    token,
)

WAYPOINT = WaypointRef("shop", "waypoint")
RSA = rsa_key("rsa-1")
EC = ec_key("ec-1")


@pytest.fixture
async def server() -> AsyncIterator[JwksServer]:
    srv = JwksServer(jwks_json(RSA, EC))
    await srv.start()
    yield srv
    await srv.close()


def authenticator(uri: str, cache: JwksCache | None = None, **rule: object) -> JwtAuthenticator:
    spec = {
        "targetRefs": [{"kind": "Service", "group": "", "name": "orders"}],
        "jwtRules": [{"issuer": ISSUER, "jwksUri": uri, **rule}],
    }
    return JwtAuthenticator([request_authn(spec)], WAYPOINT, jwks=cache)


async def run(auth: JwtAuthenticator, tok: str | None, **headers: str) -> AuthnResult:
    if tok is not None:
        headers["authorization"] = f"Bearer {tok}"
    try:
        return await auth.authenticate(target(), request("/", **headers))
    finally:
        await auth.aclose()


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: token(RSA), None),
        (lambda: token(EC, "ES256"), None),
        (lambda: token(RSA, "PS256"), None),
        (lambda: token(RSA, exp=int(time.time()) - 3600), "Jwt is expired"),
        (lambda: token(RSA, exp=int(time.time()) - 30), None),  # within the 60 s skew
        (lambda: token(RSA, nbf=int(time.time()) + 3600), "Jwt not yet valid"),
        (lambda: token(RSA, iss="https://evil.example.com"), "Jwt issuer is not configured"),
        (lambda: token(rsa_key("rsa-1")), "Jwt verification fails"),  # same kid, other key
        (lambda: token(RSA)[:-4] + "AAAA", "Jwt verification fails"),
        (lambda: "not-a-jwt", "Jwt is not in the form of Header.Payload.Signature"),
        (lambda: "a.b.c", "Jwt header or payload is an invalid JSON"),
        (lambda: token(rsa_key("unknown")), "Jwks doesn't have key to match kid or alg from Jwt"),
    ],
)
async def test_token_verdicts(server: JwksServer, make, expected: str | None) -> None:  # type: ignore[no-untyped-def]
    result = await run(authenticator(server.uri), make())
    assert result.failure == expected
    if expected is None:
        assert result.principal is not None
        assert result.principal.principal == f"{ISSUER}/alice"


async def test_alg_none_is_refused(server: JwksServer) -> None:
    header = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(json.dumps({"iss": ISSUER, "sub": "x"}).encode())
    tok = f"{header}.{body.rstrip(b'=').decode()}."
    assert (await run(authenticator(server.uri), tok)).failure == "Jwt verification fails"


async def test_no_token_passes_without_principal(server: JwksServer) -> None:
    result = await run(authenticator(server.uri), None)
    assert result == AuthnResult()
    assert server.hits == 0  # nothing to verify, nothing fetched


async def test_basic_auth_header_is_not_a_token(server: JwksServer) -> None:
    result = await run(authenticator(server.uri), None, authorization="Basic YWxhZGRpbjpvcGVu")
    assert result.failure is None and result.principal is None


@pytest.mark.parametrize(
    ("audiences", "aud", "ok"),
    [
        (["orders"], "orders", True),
        (["orders"], ["billing", "orders"], True),
        (["orders"], "billing", False),
        (["orders"], None, False),
        ([], "anything", True),
    ],
)
async def test_audiences(server: JwksServer, audiences: list[str], aud: object, ok: bool) -> None:
    result = await run(authenticator(server.uri, audiences=audiences), token(RSA, aud=aud))
    assert (result.failure is None) is ok
    if not ok:
        assert result.failure == "Audiences in Jwt are not allowed"


async def test_principal_carries_claims(server: JwksServer) -> None:
    tok = token(EC, "ES256", sub="bob", aud=["a", "b"], azp="cli", groups=["dev", "ops"])
    result = await run(authenticator(server.uri), tok)
    assert result.principal is not None
    assert result.principal.principal == f"{ISSUER}/bob"
    assert result.principal.audiences == ("a", "b")
    assert result.principal.presenter == "cli"
    assert result.principal.claims["groups"] == ["dev", "ops"]


async def test_token_header_removed_unless_forwarded(server: JwksServer) -> None:
    stripped = await run(authenticator(server.uri), token(RSA), x_other="1")
    assert stripped.headers == (("x-other", "1"),)
    kept = await run(authenticator(server.uri, forwardOriginalToken=True), token(RSA))
    assert kept.headers is None  # unchanged: the token goes upstream


async def test_output_payload_and_claims(server: JwksServer) -> None:
    tok = token(RSA, sub="carol", nested={"team": "pay"}, admin=True, groups=["a", "b"])
    auth = authenticator(
        server.uri,
        outputPayloadToHeader="x-jwt-payload",
        outputClaimToHeaders=[
            {"header": "x-sub", "claim": "sub"},
            {"header": "x-team", "claim": "nested.team"},
            {"header": "x-admin", "claim": "admin"},
            {"header": "x-groups", "claim": "groups"},
            {"header": "x-missing", "claim": "nope"},
        ],
    )
    result = await run(auth, tok, x_sub="forged", x_missing="forged")
    assert result.headers is not None
    headers = dict(result.headers)
    assert "authorization" not in headers
    assert headers["x-sub"] == "carol"
    assert headers["x-team"] == "pay"
    assert headers["x-admin"] == "true"
    assert headers["x-groups"] == "a,b"
    assert "x-missing" not in headers  # the forged value is removed too
    payload = json.loads(base64.urlsafe_b64decode(headers["x-jwt-payload"] + "=="))
    assert payload["sub"] == "carol"


async def test_output_headers_cannot_be_forged_without_token(server: JwksServer) -> None:
    auth = authenticator(server.uri, outputClaimToHeaders=[{"header": "x-sub", "claim": "sub"}])
    result = await run(auth, None, x_sub="admin")
    assert result.principal is None and result.headers == ()


async def test_custom_locations(server: JwksServer) -> None:
    auth = authenticator(
        server.uri,
        fromHeaders=[{"name": "x-jwt", "prefix": "Token "}],
        fromParams=["jwt"],
        fromCookies=["session"],
    )
    tok = token(RSA)
    # the default Authorization header is not read when locations are given
    assert (await run(auth, tok)).principal is None
    auth = authenticator(server.uri, fromHeaders=[{"name": "x-jwt", "prefix": "Token "}])
    result = await run(auth, None, x_jwt=f"Token {tok}")
    assert result.principal is not None and result.headers == ()
    auth = authenticator(server.uri, fromParams=["jwt"])
    got = await auth.authenticate(target(), request(f"/x?a=1&jwt={tok}"))
    assert got.principal is not None
    auth = authenticator(server.uri, fromCookies=["session"])
    got = await auth.authenticate(target(), request("/", cookie=f"a=b; session={tok}"))
    assert got.principal is not None
    await auth.aclose()


async def test_default_query_parameter(server: JwksServer) -> None:
    auth = authenticator(server.uri)
    got = await auth.authenticate(target(), request(f"/x?access_token={token(EC, 'ES256')}"))
    await auth.aclose()
    assert got.principal is not None


async def test_all_tokens_must_verify(server: JwksServer) -> None:
    auth = authenticator(server.uri)
    bad = token(RSA, exp=int(time.time()) - 3600)
    got = await auth.authenticate(
        target(), request(f"/?access_token={bad}", authorization=f"Bearer {token(RSA)}")
    )
    await auth.aclose()
    assert got.failure == "Jwt is expired"


async def test_only_selected_services(server: JwksServer) -> None:
    auth = authenticator(server.uri)
    other = await auth.authenticate(target("billing"), request(authorization="Bearer garbage"))
    await auth.aclose()
    assert other == AuthnResult()  # no RequestAuthentication applies to billing


async def test_inline_jwks() -> None:
    spec = {
        "targetRefs": [
            {"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "waypoint"}
        ],
        "jwtRules": [{"issuer": ISSUER, "jwks": jwks_json(EC)}],
    }
    auth = JwtAuthenticator([request_authn(spec)], WAYPOINT)
    assert (await run(auth, token(EC, "ES256"))).principal is not None
    assert (await run(auth, token(RSA))).failure is not None


async def test_key_rotation_fetches_new_kid(server: JwksServer) -> None:
    cache = JwksCache(min_refetch_interval=0.0)
    auth = authenticator(server.uri, cache)
    assert (
        await auth.authenticate(target(), request(authorization=f"Bearer {token(RSA)}"))
    ).principal
    assert server.hits == 1
    rotated = rsa_key("rsa-2")
    server.body = jwks_json(rotated)
    got = await auth.authenticate(target(), request(authorization=f"Bearer {token(rotated)}"))
    assert got.principal is not None
    assert server.hits == 2
    # the old key is gone from the issuer's set now
    old = await auth.authenticate(target(), request(authorization=f"Bearer {token(RSA)}"))
    assert old.failure == "Jwks doesn't have key to match kid or alg from Jwt"
    await auth.aclose()


async def test_unknown_kid_refetch_is_rate_limited(server: JwksServer) -> None:
    cache = JwksCache(min_refetch_interval=3600.0)
    auth = authenticator(server.uri, cache)
    for _ in range(5):
        got = await auth.authenticate(
            target(), request(authorization=f"Bearer {token(rsa_key('bogus'))}")
        )
        assert got.failure is not None
    await auth.aclose()
    assert server.hits == 1


async def test_concurrent_requests_share_one_fetch(server: JwksServer) -> None:
    auth = authenticator(server.uri)
    tok = token(RSA)
    results = await asyncio.gather(
        *(auth.authenticate(target(), request(authorization=f"Bearer {tok}")) for _ in range(10))
    )
    await auth.aclose()
    assert all(r.principal is not None for r in results)
    assert server.hits == 1


async def test_jwks_server_down_fails_closed(caplog: pytest.LogCaptureFixture) -> None:
    srv = JwksServer(jwks_json(RSA))
    uri = await srv.start()
    await srv.close()  # nothing listens there any more
    auth = authenticator(uri)
    with caplog.at_level(logging.WARNING, "ambient.waypoint.policy.jwks"):
        got = await run(auth, token(RSA))
    assert got.failure == "Jwks remote fetch is failed"
    assert any(uri in r.getMessage() for r in caplog.records)


async def test_jwks_http_error_fails_closed(server: JwksServer) -> None:
    server.status = 500
    got = await run(authenticator(server.uri), token(RSA))
    assert got.failure == "Jwks remote fetch is failed"


async def test_failed_fetch_is_retried_after_interval(server: JwksServer) -> None:
    now = [1000.0]
    cache = JwksCache(retry_interval=5.0, clock=lambda: now[0])
    server.status = 503
    auth = authenticator(server.uri, cache)
    tok = token(RSA)
    assert (await auth.authenticate(target(), request(authorization=f"Bearer {tok}"))).failure
    server.status = 200
    # within the retry interval: fail at once, without a new fetch
    assert (await auth.authenticate(target(), request(authorization=f"Bearer {tok}"))).failure
    assert server.hits == 1
    now[0] += 6
    assert (await auth.authenticate(target(), request(authorization=f"Bearer {tok}"))).principal
    assert server.hits == 2
    await auth.aclose()


async def test_refresh_keeps_cached_keys_when_fetch_fails(server: JwksServer) -> None:
    now = [1000.0]
    cache = JwksCache(refresh_interval=1200.0, clock=lambda: now[0])
    auth = authenticator(server.uri, cache)
    tok = token(RSA)
    assert (await auth.authenticate(target(), request(authorization=f"Bearer {tok}"))).principal
    server.status = 500
    now[0] += 1201
    source = cache.source(server.uri, 5.0)
    got = await auth.authenticate(target(), request(authorization=f"Bearer {tok}"))
    assert got.principal is not None  # served from the cache while refreshing
    assert source._inflight is not None
    await source._inflight  # the background refresh ran, and failed
    assert server.hits == 2
    assert (await auth.authenticate(target(), request(authorization=f"Bearer {tok}"))).principal
    await auth.aclose()


async def test_fetch_jwks_rejects_garbage(server: JwksServer) -> None:
    server.body = "<html>not json</html>"
    with pytest.raises(JwksError, match="not JSON"):
        await fetch_jwks(server.uri, 5.0)


def raw_token(payload: bytes) -> str:
    """A JWT signed with ``RSA`` over exactly ``payload`` (JSON no library would write)."""
    from joserfc import jws

    return jws.serialize_compact({"alg": "RS256", "kid": RSA.kid}, payload, RSA)


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        (b'"exp": NaN', "Jwt header or payload is an invalid JSON"),
        (b'"exp": Infinity', "Jwt header or payload is an invalid JSON"),
        (b'"nbf": -Infinity', "Jwt header or payload is an invalid JSON"),
        (b'"iat": NaN', "Jwt header or payload is an invalid JSON"),
        (b'"exp": 1e999', "Jwt exp claim is not a number"),  # json reads it as infinity
        (b'"nbf": -1e999', "Jwt nbf claim is not a number"),
        (b'"iat": "yesterday"', "Jwt iat claim is not a number"),
    ],
)
async def test_non_finite_time_claims_are_refused(
    server: JwksServer, claims: bytes, expected: str
) -> None:
    """A NaN ``exp`` never compares as past: without the check such a token never expired."""
    payload = b'{"iss": "%s", "sub": "alice", %s}' % (ISSUER.encode(), claims)
    result = await run(authenticator(server.uri), raw_token(payload))
    assert result.failure == expected
    assert result.principal is None
