"""Benchmark of the waypoint's L7 policy: AuthorizationPolicy decisions and JWT verification.

Authorization: 100 AuthorizationPolicies attached to service ``orders`` (targetRefs;
80 ALLOW, 20 DENY) using principals, namespaces, methods, paths (exact, prefix,
``{*}``/``{**}`` templates), hosts, headers, request principals and claims. Requests
are drawn so that about 60 % end in 403 (no ALLOW matches after every DENY and
ALLOW policy was tried: the worst case) and the rest are allowed. Baseline in the
same run: building the request attributes alone (path normalization included),
the fixed cost any decision pays.

JWT: ``JwtAuthenticator.authenticate`` with an RS256 and an ES256 token (inline
JWKS), against joserfc's bare ``jws.deserialize_compact`` of the same token.

    .venv/bin/python bench/l7authz.py [--requests 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import random
import time
from collections.abc import Callable

from joserfc import jws, jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

from ambient.config.requestauthn import (
    REQUEST_AUTHENTICATION_SPEC,
    RequestAuthentication,
    RequestAuthenticationSpec,
)
from ambient.config.resources import ObjectMeta
from ambient.config.schema import Report
from ambient.frozen import FrozenMap
from ambient.identity.spiffe import SpiffeId
from ambient.waypoint.model import Downstream, RequestHead, RequestPrincipal, Target
from ambient.waypoint.policy.attributes import request_attributes
from ambient.waypoint.policy.authorization import WaypointAuthorizer, compile_authorization_policy
from ambient.waypoint.policy.jwt import JwtAuthenticator
from ambient.waypoint.policy.targets import WaypointRef

WAYPOINT = WaypointRef("shop", "waypoint")
TARGET = Target("shop", "orders.shop.svc.cluster.local", ipaddress.ip_address("127.20.0.5"), 8080)
NAMESPACES = ["shop", "web", "batch", "partner", "dev"]
ACCOUNTS = [f"sa-{i}" for i in range(10)]
METHODS = ["GET", "POST", "PUT", "DELETE"]
PATHS = [
    "/api/orders",
    "/api/orders/17",
    "/api/orders/17/items",
    "/admin/x",
    "/health",
    "/files/a/b",
]


def _rule(rng: random.Random, deny: bool) -> dict[str, object]:
    source: dict[str, object]
    kind = rng.randrange(4)
    if kind == 0:
        ns, sa = rng.choice(NAMESPACES), rng.choice(ACCOUNTS)
        source = {"principals": [f"cluster.local/ns/{ns}/sa/{sa}"]}
    elif kind == 1:
        source = {"namespaces": [rng.choice(NAMESPACES)]}
    elif kind == 2:
        source = {"requestPrincipals": [f"https://idp/{rng.choice(ACCOUNTS)}"]}
    else:
        source = {"principals": ["*"], "notNamespaces": ["dev"]}
    operation: dict[str, object] = {"methods": rng.sample(METHODS, 2)}
    operation["paths"] = rng.choice(
        [["/api/orders"], ["/api/*"], ["/api/orders/{*}"], ["/files/{**}"], ["/admin/*"]]
    )
    if rng.random() < 0.3:
        operation["hosts"] = ["orders", "orders.shop.svc.cluster.local"]
    rule: dict[str, object] = {"from": [{"source": source}], "to": [{"operation": operation}]}
    if rng.random() < 0.3:
        rule["when"] = [
            {"key": "request.headers[x-env]", "values": [rng.choice(["prod", "canary"])]}
        ]
    elif rng.random() < 0.2:
        rule["when"] = [{"key": "request.auth.claims[groups]", "values": ["ops"]}]
    if deny:
        rule["to"] = [{"operation": {"paths": ["/admin/*"], "methods": ["DELETE"]}}]
    return rule


def build_authorizer(rng: random.Random, count: int) -> WaypointAuthorizer:
    policies = []
    for i in range(count):
        deny = i % 5 == 0
        spec = {
            "targetRefs": [{"kind": "Service", "group": "", "name": "orders"}],
            "action": "DENY" if deny else "ALLOW",
            "rules": [_rule(rng, deny) for _ in range(rng.randint(1, 3))],
        }
        compiled = compile_authorization_policy(f"p{i}", "shop", spec)
        assert compiled.policy is not None
        policies.append(compiled.policy)
    return WaypointAuthorizer(policies, WAYPOINT)


def build_requests(
    rng: random.Random, n: int
) -> list[tuple[Downstream, RequestHead, RequestPrincipal | None]]:
    out = []
    for _ in range(n):
        ns = rng.choice([*NAMESPACES, "other"])
        peer = Downstream(
            SpiffeId("cluster.local", ns, rng.choice(ACCOUNTS)),
            ipaddress.ip_address(f"10.0.{rng.randrange(256)}.{rng.randrange(256)}"),
        )
        headers: tuple[tuple[str, str], ...] = (("user-agent", "curl/8"),)
        if rng.random() < 0.5:
            headers += (("x-env", rng.choice(["prod", "dev"])),)
        path = rng.choice(PATHS)
        if rng.random() < 0.1:
            path = "/api/../admin/x"
        request = RequestHead(rng.choice(METHODS), "orders:8080", path, headers)
        principal = None
        if rng.random() < 0.3:
            sub = rng.choice(ACCOUNTS)
            claims = FrozenMap({"iss": "https://idp", "sub": sub, "groups": ["dev", "ops"]})
            principal = RequestPrincipal(f"https://idp/{sub}", "https://idp", sub, claims)
        out.append((peer, request, principal))
    return out


def rate(fn: Callable[[], int], rounds: int) -> float:
    best = 0.0
    for _ in range(rounds):
        start = time.process_time()
        count = fn()
        elapsed = time.process_time() - start
        best = max(best, count / elapsed)
    return best


def authz_bench(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    start = time.process_time()
    authz = build_authorizer(rng, args.policies)
    compile_ms = (time.process_time() - start) * 1000
    requests = build_requests(rng, args.requests)
    authz.select(TARGET)
    verdicts = [authz.check(TARGET, d, r, p).allowed for d, r, p in requests]
    denied = [q for q, ok in zip(requests, verdicts, strict=True) if not ok]
    allowed = [q for q, ok in zip(requests, verdicts, strict=True) if ok]

    def run(
        batch: list[tuple[Downstream, RequestHead, RequestPrincipal | None]],
    ) -> Callable[[], int]:
        def go() -> int:
            check = authz.check
            for d, r, p in batch:
                check(TARGET, d, r, p)
            return len(batch)

        return go

    def floor() -> int:
        for d, r, p in requests:
            request_attributes(TARGET, d, r, p)
        return len(requests)

    base = rate(floor, args.rounds)
    rows = [
        ("403: denied (all 100 policies tried)", rate(run(denied), args.rounds), len(denied)),
        ("200: allowed", rate(run(allowed), args.rounds), len(allowed)),
        ("mixed batch", rate(run(requests), args.rounds), len(requests)),
    ]
    print(f"{args.policies} policies on one service, compiled in {compile_ms:.0f} ms CPU")
    print(f"{'path':40} {'decisions/s':>12} {'vs floor':>9} {'requests':>9}")
    for name, value, count in rows:
        print(f"{name:40} {value:12,.0f} {value / base:8.2f}x {count:9}")
    print(f"{'floor: request attributes only':40} {base:12,.0f} {1.0:8.2f}x {len(requests):9}")


def jwt_bench(args: argparse.Namespace) -> None:
    rsa = RSAKey.generate_key(2048, parameters={"kid": "r"}, private=True)
    ec = ECKey.generate_key("P-256", parameters={"kid": "e"}, private=True)
    jwks = KeySet([rsa, ec]).as_dict(private=False)
    report = Report()
    spec = REQUEST_AUTHENTICATION_SPEC.parse(
        {
            "targetRefs": [{"kind": "Service", "name": "orders"}],
            "jwtRules": [{"issuer": "https://idp", "jwks": json.dumps(jwks)}],
        },
        ("spec",),
        report,
    )
    assert isinstance(spec, RequestAuthenticationSpec), report.issues
    authn = JwtAuthenticator(
        [RequestAuthentication(ObjectMeta("jwt", "shop"), spec=spec)], WAYPOINT
    )
    now = int(time.time())
    claims = {"iss": "https://idp", "sub": "alice", "exp": now + 3600}
    print(f"\n{'JWT':40} {'verifies/s':>12} {'vs joserfc':>10}")
    for alg, key in (("RS256", rsa), ("ES256", ec)):
        token = jwt.encode({"alg": alg, "kid": key.kid}, claims, key)
        request = RequestHead("GET", "orders", "/", (("authorization", f"Bearer {token}"),))
        n = args.requests // 10

        def ours(request: RequestHead = request, n: int = n) -> int:
            async def go() -> None:
                for _ in range(n):
                    result = await authn.authenticate(TARGET, request)
                    assert result.principal is not None

            asyncio.run(go())
            return n

        def bare(token: str = token, key: RSAKey | ECKey = key, alg: str = alg, n: int = n) -> int:
            for _ in range(n):
                jws.deserialize_compact(token, key, algorithms=[alg])
            return n

        mine, theirs = rate(ours, args.rounds), rate(bare, args.rounds)
        print(f"{'authenticate ' + alg:40} {mine:12,.0f} {mine / theirs:9.2f}x")
        print(f"{'joserfc deserialize_compact ' + alg:40} {theirs:12,.0f} {1.0:9.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", type=int, default=100)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    authz_bench(args)
    jwt_bench(args)


if __name__ == "__main__":
    main()
