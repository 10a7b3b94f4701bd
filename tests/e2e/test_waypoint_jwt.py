"""RequestAuthentication (JWT) and HTTP client interop, end to end through a running waypoint.

One mesh for the module (``ambient up``, real processes): ``web`` (a client pod on
node-1), ``orders`` (``examples/shop/app.py``, which echoes the request headers it
received, on node-2) and the namespace's waypoint. The ``orders`` Service is bound to
the waypoint, which enforces:

- ``RequestAuthentication/orders-jwt`` (``targetRefs`` the Service): issuer
  ``ISSUER`` (default locations, audience ``orders``, ``outputClaimToHeaders``) and
  issuer ``PARTNER`` (``fromHeaders``/``fromParams``/``fromCookies``,
  ``forwardOriginalToken``, ``outputPayloadToHeader``);
- ``RequestAuthentication/waypoint-jwt`` (``targetRefs`` the Gateway): issuer
  ``LATE`` whose JWKS server is down at the first fetch, and issuer ``ROTATING``
  whose key set changes during the run;
- ``AuthorizationPolicy/orders-jwt``: ``/public/*`` for anyone, ``/secure/*`` for
  any request principal, ``/admin/*`` for a principal whose ``groups`` claim has
  ``admins``;
- ``VirtualService/orders``: adds ``x-route`` to the request and ``x-routed-by`` to
  the response, so every client test can see that the waypoint routed it.

The JWKS servers are plain HTTP servers on 127.0.0.1 run by this test process, not
pods: the waypoint fetches ``jwksUri`` itself, outside the mesh, as istiod/Envoy do
with an identity provider's keys. Keys are generated and tokens signed with joserfc.

Clients run in the ``web`` pod through ``ambient exec`` (so through its ztunnel):
curl over HTTP/1.1 and HTTP/2 with prior knowledge, nghttp (nghttp2's client, made to
use the pod's SOCKS5 proxy by proxychains4, as it has no proxy support of its own) and
a Go program on net/http (HTTP/1.1, and unencrypted HTTP/2 with prior knowledge
through the standard library's ``Transport.Protocols``, Go 1.24+).
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

from ambient.gomod import GoNotFound, find_go
from tests.e2e.harness import SHOP, Mesh, wait_for
from tests.e2e.manifests import deployment, manifest, namespace, service, service_account, waypoint

pytestmark = pytest.mark.slow

SINGLE_PROCESS = False
"""The mesh's process mode: ``up --single-process`` (True) or components as processes."""

ISSUER = "https://issuer.example"
PARTNER = "https://partner.example"
LATE = "https://late.example"
ROTATING = "https://rotating.example"
ORDERS = "http://orders:8080"
GOCLIENT_SRC = Path(__file__).with_name("goclient")

# -- keys and tokens ---------------------------------------------------------------------------

RSA_KEY = RSAKey.generate_key(2048, {"kid": "rsa-1", "alg": "RS256", "use": "sig"}, private=True)
EC_KEY = ECKey.generate_key("P-256", {"kid": "ec-1", "alg": "ES256", "use": "sig"}, private=True)
# Same kid and algorithm as RSA_KEY, but not the key the issuer publishes: a forged signature.
IMPOSTOR_KEY = RSAKey.generate_key(
    2048, {"kid": "rsa-1", "alg": "RS256", "use": "sig"}, private=True
)
ROTATED_OLD = ECKey.generate_key("P-256", {"kid": "rot-1", "alg": "ES256"}, private=True)
ROTATED_NEW = RSAKey.generate_key(2048, {"kid": "rot-2", "alg": "RS256"}, private=True)
LATE_KEY = ECKey.generate_key("P-256", {"kid": "late-1", "alg": "ES256"}, private=True)

Key = RSAKey | ECKey


def public_set(*keys: Key) -> dict[str, Any]:
    """The JWK Set an issuer publishes: public halves only."""
    document: dict[str, Any] = {**KeySet(list(keys)).as_dict(private=False)}
    assert all("d" not in key for key in document["keys"])
    return document


def token(key: Key, issuer: str = ISSUER, *, lifetime: float = 600, **claims: Any) -> str:
    """A JWT signed with ``key`` (its ``kid`` and ``alg`` in the header)."""
    now = int(time.time())
    body = {
        "iss": issuer,
        "sub": "alice",
        "aud": "orders",
        "iat": now,
        "exp": int(now + lifetime),
        **claims,
    }
    header = {"alg": key.alg, "kid": key.kid, "typ": "JWT"}
    return jwt.encode(header, body, key)


# -- the identity provider's JWKS endpoint -----------------------------------------------------


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class JwksServer:
    """JWK Sets served over HTTP on loopback, per path; counts the GETs of each path.

    ``stop()`` closes the listening socket (connections are refused, as with a dead
    identity provider); ``start()`` serves again on the same port.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = free_port(host)
        self.documents: dict[str, bytes] = {}
        self.hits: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def uri(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def publish(self, path: str, *keys: Key) -> None:
        with self._lock:
            self.documents[path] = json.dumps(public_set(*keys)).encode()

    def start(self) -> JwksServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with owner._lock:
                    owner.hits[self.path] += 1
                    body = owner.documents.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None


# -- the mesh ----------------------------------------------------------------------------------

SHOP_MESH = manifest(
    namespace("shop", waypoint="waypoint"),
    service_account("shop", "web"),
    service_account("shop", "orders"),
    service("shop", "orders", [{"name": "http", "port": 8080, "targetPort": 8080}]),
    deployment("shop", "web", ["sleep", "infinity"], service_account="web", node="node-1"),
    deployment("shop", "orders", ["python3", "app.py", "--name", "orders", "--port", "8080"],
               labels={"app": "orders", "version": "v1"}, selector={"app": "orders"},
               service_account="orders", node="node-2",
               ports=[{"containerPort": 8080, "name": "http"}]),
    waypoint("shop"),
)  # fmt: skip
# the route and the JWT rules and policies (str.format: issuers and key URIs)
JWT = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: orders, namespace: shop}}
spec:
  hosts: [orders.shop.svc.cluster.local]
  http:
  - headers:
      request: {{set: {{x-route: orders-jwt}}}}
      response: {{set: {{x-routed-by: orders-route}}}}
    route:
    - destination: {{host: orders.shop.svc.cluster.local}}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: orders-jwt, namespace: shop}}
spec:
  targetRefs: [{{kind: Service, group: "", name: orders}}]
  jwtRules:
  - issuer: {issuer}
    audiences: [orders]
    jwksUri: {keys_uri}
    outputClaimToHeaders:
    - {{header: x-jwt-sub, claim: sub}}
    - {{header: x-jwt-groups, claim: groups}}
  - issuer: {partner}
    jwksUri: {keys_uri}
    fromHeaders: [{{name: x-partner-token, prefix: "Token "}}]
    fromParams: [partner_token]
    fromCookies: [partner_session]
    forwardOriginalToken: true
    outputPayloadToHeader: x-partner-payload
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: waypoint-jwt, namespace: shop}}
spec:
  targetRefs: [{{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}}]
  jwtRules:
  - issuer: {late}
    jwksUri: {late_uri}
  - issuer: {rotating}
    jwksUri: {rotating_uri}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: orders-jwt, namespace: shop}}
spec:
  targetRefs: [{{kind: Service, group: "", name: orders}}]
  action: ALLOW
  rules:
  - to: [{{operation: {{paths: ["/public/*"]}}}}]
  - from: [{{source: {{requestPrincipals: ["*"]}}}}]
    to: [{{operation: {{paths: ["/secure/*"]}}}}]
  - from: [{{source: {{requestPrincipals: ["*"]}}}}]
    to: [{{operation: {{paths: ["/admin/*"]}}}}]
    when:
    - key: request.auth.claims[groups]
      values: [admins]
"""


@dataclass
class Env:
    mesh: Mesh
    jwks: JwksServer  # ISSUER, PARTNER and ROTATING
    late: JwksServer  # LATE: not serving until a test starts it


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("waypoint-jwt")
    jwks = JwksServer()
    jwks.publish("/keys.json", RSA_KEY, EC_KEY)
    jwks.publish("/rotating.json", ROTATED_OLD)
    jwks.start()
    late = JwksServer()  # the port is chosen, nothing listens on it yet
    late.publish("/keys.json", LATE_KEY)
    config = root / "mesh"
    config.mkdir()
    shutil.copy(SHOP / "app.py", config / "app.py")
    (config / "mesh.yaml").write_text(
        manifest(
            SHOP_MESH,
            JWT.format(
                issuer=ISSUER,
                partner=PARTNER,
                late=LATE,
                rotating=ROTATING,
                keys_uri=jwks.uri("/keys.json"),
                late_uri=late.uri("/keys.json"),
                rotating_uri=jwks.uri("/rotating.json"),
            ),
        )
    )
    mesh = Mesh(config, root / "state", root / "up.log", single_process=SINGLE_PROCESS)
    try:
        mesh.start()
        wait_for(
            "the waypoint to enforce the orders policy",
            lambda: curl(mesh, "/secure/ready").status == 403,
            timeout=30,
            every=0.5,
        )
        yield Env(mesh, jwks, late)
    finally:
        mesh.stop()
        jwks.stop()
        late.stop()


# -- clients -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One HTTP response as a client saw it."""

    version: str
    status: int
    headers: dict[str, str]
    body: str

    def json(self) -> dict[str, Any]:
        answer: dict[str, Any] = json.loads(self.body)
        return answer

    @property
    def backend_headers(self) -> dict[str, str]:
        """The request headers the orders app received (it echoes them)."""
        headers: dict[str, str] = self.json()["headers"]
        return headers


_STATUS_LINE = re.compile(r"HTTP/(\S+) (\d{3})")


def parse_curl(output: str) -> Reply:
    """``curl -i`` output (line ends already translated): status line, headers, body."""
    head, _, body = output.partition("\n\n")
    lines = head.splitlines()
    match = _STATUS_LINE.match(lines[0])
    assert match, f"not an HTTP response: {output!r}"
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Reply(match.group(1), int(match.group(2)), headers, body)


def _ok(reply: Reply) -> Reply | None:
    """``reply`` if it is a 200, for ``wait_for``."""
    return reply if reply.status == 200 else None


def curl(mesh: Mesh, path: str, *headers: str, version: str = "--http1.1") -> Reply:
    """GET ``ORDERS + path`` with curl in the web pod (through its ztunnel's SOCKS5)."""
    args = [arg for h in headers for arg in ("-H", h)]
    result = mesh.exec("deploy/web", "curl", "-sS", "-i", "-m", "10", version, *args, ORDERS + path)
    if result.returncode != 0:
        pytest.fail(f"curl {path} failed ({result.returncode}): {result.stderr}")
    return parse_curl(result.stdout)


def bearer(value: str) -> str:
    return f"Authorization: Bearer {value}"


# -- RequestAuthentication ---------------------------------------------------------------------


@pytest.mark.parametrize("key", [RSA_KEY, EC_KEY], ids=["RS256", "ES256"])
def test_valid_token_is_200_and_the_backend_sees_claims_not_the_token(env: Env, key: Key) -> None:
    signed = token(key, groups=["users", "beta"])
    # a client cannot forge what the waypoint derives from the token
    reply = curl(env.mesh, "/secure/orders", bearer(signed), "x-jwt-sub: mallory")
    assert reply.status == 200, reply
    seen = reply.backend_headers
    assert seen["x-jwt-sub"] == "alice"
    assert seen["x-jwt-groups"] == "users,beta"
    assert "authorization" not in seen  # forwardOriginalToken defaults to false
    assert seen["x-route"] == "orders-jwt"


def test_token_in_the_default_query_parameter_is_accepted(env: Env) -> None:
    reply = curl(env.mesh, f"/secure/orders?access_token={token(RSA_KEY)}")
    assert reply.status == 200, reply
    assert reply.backend_headers["x-jwt-sub"] == "alice"


INVALID_TOKENS: dict[str, tuple[Callable[[], str], str]] = {
    # minted when the test runs: collection may happen long before (exp is 10 min)
    "bad-signature": (lambda: token(IMPOSTOR_KEY), "Jwt verification fails"),
    "expired": (lambda: token(EC_KEY, lifetime=-3600), "Jwt is expired"),
    "not-yet-valid": (
        lambda: token(RSA_KEY, nbf=int(time.time()) + 3600),
        "Jwt not yet valid",
    ),
    "wrong-audience": (lambda: token(RSA_KEY, aud="billing"), "Audiences in Jwt are not allowed"),
    "unknown-issuer": (
        lambda: token(RSA_KEY, "https://unknown.example"),
        "Jwt issuer is not configured",
    ),
    # the partner issuer is configured, but only for its own header, parameter and cookie
    "wrong-location": (lambda: token(RSA_KEY, PARTNER), "Jwt issuer is not configured"),
    "junk": (lambda: "not-a-jwt", "Jwt is not in the form of Header.Payload.Signature"),
    # Python's json reads NaN (which never compares as past: it never expired) and Infinity
    "exp-nan": (lambda: token(RSA_KEY, exp=math.nan), "Jwt header or payload is an invalid JSON"),
    "exp-infinity": (
        lambda: token(RSA_KEY, exp=math.inf),
        "Jwt header or payload is an invalid JSON",
    ),
}


@pytest.mark.parametrize("case", INVALID_TOKENS)
def test_invalid_token_is_401_with_envoys_reason(env: Env, case: str) -> None:
    mint, reason = INVALID_TOKENS[case]
    # /public needs no principal: an invalid token is refused wherever it is sent
    reply = curl(env.mesh, "/public/orders", bearer(mint()))
    assert (reply.status, reply.body) == (401, reason)
    assert reply.headers["www-authenticate"].startswith('Bearer realm="http://orders:8080/public')
    assert 'error="invalid_token"' in reply.headers["www-authenticate"]


def test_missing_token_is_403_where_a_principal_is_required(env: Env) -> None:
    refused = curl(env.mesh, "/secure/orders")
    assert (refused.status, refused.body) == (403, "RBAC: access denied")
    public = curl(env.mesh, "/public/orders", "x-jwt-sub: mallory", "x-partner-payload: e30")
    assert public.status == 200
    # the headers the rules output cannot be forged by sending no token either
    assert "x-jwt-sub" not in public.backend_headers
    assert "x-partner-payload" not in public.backend_headers


def test_claim_condition_decides_admin_paths(env: Env) -> None:
    user = curl(env.mesh, "/admin/orders", bearer(token(EC_KEY, groups=["users"])))
    assert (user.status, user.body) == (403, "RBAC: access denied")
    admin = curl(env.mesh, "/admin/orders", bearer(token(EC_KEY, groups=["users", "admins"])))
    assert admin.status == 200, admin


def test_from_headers_with_prefix_and_forward_original_token(env: Env) -> None:
    signed = token(EC_KEY, PARTNER, sub="partner-7")
    reply = curl(env.mesh, "/secure/orders", f"x-partner-token: Token {signed}")
    assert reply.status == 200, reply
    # forwardOriginalToken: true keeps the header; the payload goes on as base64url
    seen = reply.backend_headers
    assert seen["x-partner-token"] == f"Token {signed}"
    assert seen["x-partner-payload"] == signed.split(".")[1]
    payload = json.loads(base64.urlsafe_b64decode(seen["x-partner-payload"] + "=="))
    assert (payload["iss"], payload["sub"]) == (PARTNER, "partner-7")
    assert "x-jwt-sub" not in seen  # the partner rule outputs no claim headers
    # the header without its configured prefix carries no token: no principal
    bare = curl(env.mesh, "/secure/orders", f"x-partner-token: {signed}")
    assert bare.status == 403


def test_from_params_and_cookies(env: Env) -> None:
    good = curl(env.mesh, f"/secure/orders?partner_token={token(RSA_KEY, PARTNER)}")
    assert good.status == 200, good
    cookie = f"Cookie: theme=dark; partner_session={token(EC_KEY, PARTNER)}"
    assert curl(env.mesh, "/secure/orders", cookie).status == 200
    bad = curl(env.mesh, f"/public/orders?partner_token={token(IMPOSTOR_KEY, PARTNER)}")
    assert (bad.status, bad.body) == (401, "Jwt verification fails")


def test_jwks_server_down_at_first_fetch_fails_closed_then_recovers(env: Env) -> None:
    signed = token(LATE_KEY, LATE)
    refused = curl(env.mesh, "/secure/orders", bearer(signed))
    assert (refused.status, refused.body) == (401, "Jwks remote fetch is failed")
    env.late.start()
    # the waypoint retries a failed fetch after a pause (jwks.RETRY_INTERVAL, 5 s)
    reply = wait_for(
        "the waypoint to fetch the JWKS once its server is up",
        lambda: _ok(curl(env.mesh, "/secure/orders", bearer(signed))),
        timeout=30,
        every=0.5,
    )
    assert reply.backend_headers["x-route"] == "orders-jwt"
    assert env.late.hits["/keys.json"] >= 1


def test_key_rotation_accepts_the_new_kid_after_a_refetch(env: Env) -> None:
    before = curl(env.mesh, "/secure/orders", bearer(token(ROTATED_OLD, ROTATING)))
    assert before.status == 200, before
    fetched = env.jwks.hits["/rotating.json"]
    assert fetched >= 1
    env.jwks.publish("/rotating.json", ROTATED_OLD, ROTATED_NEW)
    started = time.monotonic()
    signed = token(ROTATED_NEW, ROTATING)
    # an unknown kid makes the waypoint fetch again, at most once per 10 s
    wait_for(
        "a token with the new kid to be accepted",
        lambda: curl(env.mesh, "/secure/orders", bearer(signed)).status == 200,
        timeout=40,
        every=0.5,
    )
    elapsed = time.monotonic() - started
    assert env.jwks.hits["/rotating.json"] - fetched <= 1 + elapsed // 10 + 1
    # the old key is still published and still works
    assert curl(env.mesh, "/secure/orders", bearer(token(ROTATED_OLD, ROTATING))).status == 200


EXTRA = "https://extra.example"
EXTRA_KEY = ECKey.generate_key("P-256", {"kid": "extra-1", "alg": "ES256"}, private=True)


def test_request_authentication_applied_and_deleted_live(env: Env, tmp_path: Path) -> None:
    """A RequestAuthentication (inline ``jwks``) added and removed on the running mesh."""
    manifest = tmp_path / "extra.yaml"
    jwks = json.dumps(public_set(EXTRA_KEY))
    manifest.write_text(
        "apiVersion: security.istio.io/v1\n"
        "kind: RequestAuthentication\n"
        "metadata: {name: extra-jwt, namespace: shop}\n"
        "spec:\n"
        '  targetRefs: [{kind: Service, group: "", name: orders}]\n'
        f"  jwtRules: [{{issuer: {EXTRA}, jwks: '{jwks}'}}]\n"
    )
    signed = bearer(token(EXTRA_KEY, EXTRA))
    before = curl(env.mesh, "/secure/orders", signed)
    assert (before.status, before.body) == (401, "Jwt issuer is not configured")
    env.mesh.ok("apply", "-f", str(manifest))
    try:
        wait_for(
            "the waypoint to accept the new issuer",
            lambda: curl(env.mesh, "/secure/orders", signed).status == 200,
            timeout=20,
            every=0.5,
        )
    finally:
        env.mesh.ok("delete", "-f", str(manifest))
    wait_for(
        "the waypoint to forget the deleted issuer",
        lambda: curl(env.mesh, "/secure/orders", signed).status == 401,
        timeout=20,
        every=0.5,
    )


# -- HTTP clients through the waypoint ---------------------------------------------------------


_ACCESS = re.compile(r'request complete .*path="([^"]*)" .*protocol=(\S+) status=(\d+)')


def waypoint_protocol(mesh: Mesh, path: str) -> str:
    """The protocol of the 200 for ``path`` in the waypoint's access log (what it served)."""

    def find() -> str | None:
        for line in mesh.log().splitlines():
            match = _ACCESS.search(line)
            if match and match.group(1) == path and match.group(3) == "200":
                return match.group(2)
        return None

    return wait_for(f"the waypoint's access log line for {path}", find, timeout=10)


def assert_routed(reply: Reply, path: str) -> None:
    """200 from orders through the VirtualService route, with the token's claims."""
    assert reply.status == 200, reply
    assert reply.headers["x-routed-by"] == "orders-route"
    answer = reply.json()
    assert (answer["app"], answer["path"]) == ("orders", path)
    assert answer["headers"]["x-route"] == "orders-jwt"
    assert answer["headers"]["x-jwt-sub"] == "alice"


@pytest.mark.parametrize(
    ("flag", "version"), [("--http1.1", "1.1"), ("--http2-prior-knowledge", "2")]
)
def test_curl(env: Env, flag: str, version: str) -> None:
    path = f"/secure/curl-{version}"
    reply = curl(env.mesh, path, bearer(token(RSA_KEY)), version=flag)
    assert reply.version == version
    assert_routed(reply, path)
    assert waypoint_protocol(env.mesh, path) == f"HTTP/{version}"
    refused = curl(env.mesh, path, version=flag)
    assert (refused.version, refused.status, refused.body) == (version, 403, "RBAC: access denied")
    invalid = curl(env.mesh, path, bearer(token(IMPOSTOR_KEY)), version=flag)
    assert (invalid.version, invalid.status, invalid.body) == (
        version,
        401,
        "Jwt verification fails",
    )


def pod_proxy(mesh: Mesh) -> tuple[str, int]:
    """The SOCKS5 address in the web pod's ``ALL_PROXY``."""
    value = mesh.exec("deploy/web", "printenv", "ALL_PROXY").stdout.strip()
    parts = urlsplit(value)
    assert parts.scheme.startswith("socks5") and parts.hostname and parts.port, value
    return parts.hostname, parts.port


_NGHTTP_HEADER = re.compile(r"recv \(stream_id=13\) (\S+): (.*)$")


def nghttp(env: Env, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """nghttp in the web pod, its connections made through the pod's SOCKS5 by proxychains4."""
    proxychains = shutil.which("proxychains4")
    if shutil.which("nghttp") is None or proxychains is None:
        pytest.skip("needs nghttp and proxychains4 (Debian nghttp2-client, proxychains4)")
    host, port = pod_proxy(env.mesh)
    conf = tmp_path / "proxychains.conf"
    conf.write_text(f"strict_chain\nproxy_dns\n[ProxyList]\nsocks5 {host} {port}\n")
    result = env.mesh.exec(
        "deploy/web", proxychains, "-q", "-f", str(conf), "nghttp", "-t", "10", *args
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_nghttp(env: Env, tmp_path: Path) -> None:
    path = "/secure/nghttp"
    auth = bearer(token(EC_KEY)).replace(": ", ":", 1)
    result = nghttp(env, tmp_path, "-v", "-H", auth, ORDERS + path)
    headers: dict[str, str] = {}
    body = []
    for line in result.stdout.splitlines():
        if match := _NGHTTP_HEADER.search(line):
            headers[match.group(1)] = match.group(2)
        elif line.startswith("{"):
            body.append(line)
    assert len(body) == 1, result.stdout
    reply = Reply("2", int(headers[":status"]), headers, body[0])
    assert_routed(reply, path)
    assert waypoint_protocol(env.mesh, path) == "HTTP/2"


_NGHTTP_STAT = re.compile(r"^\s*(\d+)\s+\S+\s+\S+\s+\S+\s+(\d{3})\s+\d+\s+(/\S*)$")


def test_nghttp_concurrent_streams_are_judged_each_on_its_own(env: Env, tmp_path: Path) -> None:
    """200, 403 and 401 on three concurrent streams of one HTTP/2 connection.

    (curl 7.88 cannot reuse an h2c prior-knowledge connection at all -- "Error in the
    HTTP2 framing layer" against nghttpx too -- so nghttp drives this one.)
    """
    result = nghttp(
        env,
        tmp_path,
        "--stat",
        f"{ORDERS}/secure/streams-ok?access_token={token(RSA_KEY)}",
        f"{ORDERS}/secure/streams-anonymous",
        f"{ORDERS}/public/streams-forged?access_token={token(IMPOSTOR_KEY)}",
    )
    rows = [m.groups() for line in result.stdout.splitlines() if (m := _NGHTTP_STAT.match(line))]
    outcome = {path.split("?")[0]: code for _, code, path in rows}
    assert outcome == {
        "/secure/streams-ok": "200",
        "/secure/streams-anonymous": "403",
        "/public/streams-forged": "401",
    }, result.stdout
    assert sorted(int(stream) for stream, _, _ in rows) == [13, 15, 17]  # one connection


@pytest.fixture(scope="module")
def goclient(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        go = str(find_go((1, 24)).path)  # http.Protocols (h2c in the standard library)
    except GoNotFound as err:
        pytest.skip(str(err))
    binary = tmp_path_factory.mktemp("goclient") / "goclient"
    env = {
        **os.environ,
        "GOPROXY": "off",
        "GOFLAGS": "-mod=mod",
        "GOTOOLCHAIN": "local",
        "CGO_ENABLED": "0",
    }
    built = subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=GOCLIENT_SRC,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if built.returncode != 0:
        pytest.fail(f"go build failed ({built.returncode}):\n{built.stdout}{built.stderr}")
    return binary


@pytest.mark.parametrize(("flags", "version"), [((), "1.1"), (("-h2c",), "2")])
def test_go_net_http(env: Env, goclient: Path, flags: tuple[str, ...], version: str) -> None:
    path = f"/secure/go-{version}"
    auth = bearer(token(RSA_KEY))
    result = env.mesh.exec("deploy/web", str(goclient), *flags, "-H", auth, ORDERS + path)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["proto"] == ("HTTP/1.1" if version == "1.1" else "HTTP/2.0")
    reply = Reply(version, answer["status"], answer["headers"], answer["body"])
    assert_routed(reply, path)
    assert waypoint_protocol(env.mesh, path) == f"HTTP/{version}"
