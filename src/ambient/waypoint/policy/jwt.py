"""RequestAuthentication at the waypoint: find JWTs, verify them, produce the request principal.

``JwtAuthenticator`` implements ``waypoint.model.RequestAuthenticator`` for one
waypoint. Semantics, as Istio configures Envoy's ``jwt_authn`` filter
(``requires_any`` of every rule, plus ``allow_missing``):

- selection: the same ``targetRefs`` attachment as AuthorizationPolicy (see
  ``targets``); the rules of every applicable RequestAuthentication are merged;
- locations: a rule without ``fromHeaders``/``fromParams``/``fromCookies`` reads
  ``Authorization: Bearer <token>`` (the ``Bearer`` prefix in any case) and the
  ``access_token`` query parameter; otherwise only the locations it lists
  (a header's ``prefix`` must match exactly, then the rest is the token);
- no token anywhere: the request goes on without a principal (an
  AuthorizationPolicy decides whether that is enough);
- every token found must verify (several tokens: all of them, the first one
  gives the principal) against a rule with its ``iss`` that reads the token's
  location (a rule without ``issuer`` accepts any). A token of an unknown issuer
  is rejected (Envoy: "Jwt issuer is not configured"). Invalid -> 401 with
  Envoy's reason as the body;
- checks: signature (RS/PS/ES 256/384/512, EdDSA, HS256/384/512 for ``oct``
  keys; ``none`` is refused) with the key of the token's ``kid`` (or any key
  that fits when there is no ``kid``); ``exp`` and ``nbf`` with 60 s clock skew
  (Envoy's default); ``aud`` must contain one of ``audiences`` when set. A token
  without ``exp`` is accepted, as Envoy does. ``exp``, ``nbf`` and ``iat``, when
  present, must be finite numbers: the payload is read as strict JSON (no
  ``NaN``/``Infinity``, which Python's ``json`` would take and which never
  expire), and ``1e999`` (read as infinity) is refused too;
- principal ``<iss>/<sub>``; claims, ``aud``, ``azp`` go to ``RequestPrincipal``;
- outputs, on success: ``forwardOriginalToken: false`` (the default) removes the
  header the token came from (a token in a query parameter or cookie is left
  where it is, as Envoy does); ``outputPayloadToHeader`` carries the token's
  base64url payload; ``outputClaimToHeaders`` a string, number or boolean claim
  (``a.b`` for nested; a list of strings is joined with ``,``). Hardening beyond
  Envoy: the output headers a rule names are always removed from what the client
  sent, so a client cannot forge them by sending no token.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import Key, KeySet

from ambient.config.requestauthn import JwtRule, RequestAuthentication, parse_jwks
from ambient.config.targetref import TargetRef
from ambient.frozen import FrozenMap
from ambient.waypoint.model import AuthnResult, RequestHead, RequestPrincipal, Target
from ambient.waypoint.policy.jwks import JwksCache, JwksError, JwksSource
from ambient.waypoint.policy.targets import (
    ROOT_NAMESPACE,
    ServiceRef,
    WaypointRef,
    attaches_to_service,
    attaches_to_waypoint,
    kubernetes_service_of,
)

__all__ = ["CLOCK_SKEW", "JwtAuthenticator", "Location"]

log = logging.getLogger("ambient.waypoint.policy.jwt")

CLOCK_SKEW = 60.0
ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
    | {"EdDSA", "HS256", "HS384", "HS512"}
)
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP", "HS": "oct"}

# A location: ("header", name, prefix) | ("param", name, "") | ("cookie", name, "")
Location = tuple[str, str, str]
_BEARER: Location = ("header", "authorization", "Bearer ")
_DEFAULT_LOCATIONS: tuple[Location, ...] = (_BEARER, ("param", "access_token", ""))


class _Invalid(Exception):
    """A token failed verification; the message is Envoy's reason."""


@dataclass(frozen=True)
class _CompiledRule:
    rule: JwtRule
    locations: frozenset[Location]
    inline_keys: KeySet | None
    source: JwksSource | None
    output_headers: frozenset[str]

    async def keys(self) -> KeySet:
        if self.inline_keys is not None:
            return self.inline_keys
        assert self.source is not None
        try:
            return await self.source.keys()
        except JwksError as exc:
            raise _Invalid("Jwks remote fetch is failed") from exc


@dataclass(frozen=True)
class _Policy:
    namespace: str
    refs: tuple[TargetRef, ...]
    rules: tuple[_CompiledRule, ...]


@dataclass(frozen=True)
class _Token:
    text: str
    locations: frozenset[Location]


def _locations(rule: JwtRule) -> frozenset[Location]:
    found: list[Location] = [("header", h.name.lower(), h.prefix) for h in rule.from_headers]
    found += [("param", name, "") for name in rule.from_params]
    found += [("cookie", name, "") for name in rule.from_cookies]
    return frozenset(found or _DEFAULT_LOCATIONS)


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


class JwtAuthenticator:
    """``RequestAuthenticator`` for one waypoint; ``aclose()`` stops JWKS fetches."""

    def __init__(
        self,
        policies: Iterable[RequestAuthentication],
        waypoint: WaypointRef,
        *,
        root_namespace: str = ROOT_NAMESPACE,
        service_of: Callable[[Target], ServiceRef | None] = kubernetes_service_of,
        jwks: JwksCache | None = None,
        clock: Callable[[], float] = time.time,
        clock_skew: float = CLOCK_SKEW,
    ) -> None:
        self._jwks = jwks or JwksCache()
        self._clock = clock
        self._skew = clock_skew
        self._service_of = service_of
        self._waypoint_wide: list[_CompiledRule] = []
        self._by_service: list[_Policy] = []
        for policy in policies:
            compiled = _Policy(
                policy.meta.namespace,
                policy.spec.refs,
                tuple(self._compile(rule) for rule in policy.spec.jwt_rules),
            )
            if attaches_to_waypoint(compiled.namespace, compiled.refs, waypoint, root_namespace):
                self._waypoint_wide += compiled.rules
            elif compiled.refs:
                self._by_service.append(compiled)
        self._cache: dict[tuple[str, str | None], tuple[_CompiledRule, ...]] = {}

    def _compile(self, rule: JwtRule) -> _CompiledRule:
        inline = parse_jwks(rule.jwks) if rule.jwks else None
        source = self._jwks.source(rule.jwks_uri, rule.timeout) if inline is None else None
        outputs = {c.header.lower() for c in rule.output_claim_to_headers}
        if rule.output_payload_to_header:
            outputs.add(rule.output_payload_to_header.lower())
        return _CompiledRule(rule, _locations(rule), inline, source, frozenset(outputs))

    def rules_for(self, target: Target) -> tuple[_CompiledRule, ...]:
        key = (target.namespace, target.hostname)
        rules = self._cache.get(key)
        if rules is None:
            service = self._service_of(target)
            chosen = list(self._waypoint_wide)
            for policy in self._by_service:
                if attaches_to_service(policy.namespace, policy.refs, service):
                    chosen += policy.rules
            rules = self._cache[key] = tuple(chosen)
        return rules

    async def aclose(self) -> None:
        await self._jwks.aclose()

    async def authenticate(self, target: Target, request: RequestHead) -> AuthnResult:
        rules = self.rules_for(target)
        if not rules:
            return AuthnResult()
        tokens = _extract(request, {loc for r in rules for loc in r.locations})
        headers = list(request.headers)
        outputs = {name for r in rules for name in r.output_headers}
        if outputs:
            headers = [(k, v) for k, v in headers if k not in outputs]
        principal: RequestPrincipal | None = None
        for token in tokens:
            try:
                found, rule, payload_segment = await self._verify(token, rules)
            except _Invalid as exc:
                log.info("JWT rejected for %s: %s", target.hostname or target.address, exc)
                return AuthnResult(failure=str(exc))
            principal = principal or found
            headers = _outputs(headers, rule, token, found, payload_segment)
        changed = len(headers) != len(request.headers) or tuple(headers) != request.headers
        return AuthnResult(principal, None, tuple(headers) if changed else None)

    async def _verify(
        self, token: _Token, rules: tuple[_CompiledRule, ...]
    ) -> tuple[RequestPrincipal, JwtRule, str]:
        parts = token.text.split(".")
        if len(parts) != 3:
            raise _Invalid("Jwt is not in the form of Header.Payload.Signature")
        try:
            header = _strict_json(_b64decode(parts[0]))
            payload = _strict_json(_b64decode(parts[1]))
        except (ValueError, binascii.Error):
            raise _Invalid("Jwt header or payload is an invalid JSON") from None
        if not isinstance(header, dict) or not isinstance(payload, dict):
            raise _Invalid("Jwt header or payload is an invalid JSON")
        issuer = payload.get("iss")
        candidates = [
            r
            for r in rules
            if (r.rule.issuer == issuer or not r.rule.issuer) and r.locations & token.locations
        ]
        if not candidates:
            raise _Invalid("Jwt issuer is not configured")
        first: _Invalid | None = None
        for rule in candidates:
            try:
                await self._check_signature(token.text, header, rule)
                self._check_claims(payload, rule.rule)
            except _Invalid as exc:
                first = first or exc
                continue
            return _principal(payload), rule.rule, parts[1]
        assert first is not None
        raise first

    async def _check_signature(
        self, text: str, header: dict[str, object], rule: _CompiledRule
    ) -> None:
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALGORITHMS:
            raise _Invalid("Jwt verification fails")  # includes alg "none"
        kid = header.get("kid")
        keys = _candidate_keys(await rule.keys(), alg, kid)
        if not keys and isinstance(kid, str) and rule.source is not None:
            refreshed = await rule.source.refetch()  # key rotation: a new kid
            keys = _candidate_keys(refreshed, alg, kid) if refreshed else []
        if not keys:
            raise _Invalid("Jwks doesn't have key to match kid or alg from Jwt")
        for key in keys:
            try:
                jws.deserialize_compact(text, key, algorithms=[alg])
                return
            except (JoseError, ValueError):
                continue
        raise _Invalid("Jwt verification fails")

    def _check_claims(self, payload: dict[str, object], rule: JwtRule) -> None:
        now = self._clock()
        exp, nbf = payload.get("exp"), payload.get("nbf")
        for name in ("exp", "nbf", "iat"):
            value = payload.get(name)
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                raise _Invalid(f"Jwt {name} claim is not a number")
        if isinstance(exp, int | float) and now > exp + self._skew:
            raise _Invalid("Jwt is expired")
        if isinstance(nbf, int | float) and now + self._skew < nbf:
            raise _Invalid("Jwt not yet valid")
        if rule.audiences and not set(_audiences(payload)) & set(rule.audiences):
            raise _Invalid("Audiences in Jwt are not allowed")


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _strict_json(data: bytes) -> object:
    """RFC 8259 JSON: Python's ``json`` also reads ``NaN``, ``Infinity`` and ``-Infinity``,
    and a ``NaN`` ``exp`` never compares as past (every comparison with it is False);
    those are refused here, and a number too large for a float (``1e999`` reads as
    infinity) is refused by the claim checks."""
    return json.loads(data, parse_constant=_refuse_constant)


def _candidate_keys(keys: KeySet, alg: str, kid: object) -> list[Key]:
    kty = _KEY_TYPES.get(alg[:2])
    out: list[Key] = []
    for key in keys.keys:
        if key.key_type != kty:
            continue
        if isinstance(kid, str) and key.kid != kid:
            continue
        key_alg = key.get("alg")
        if key_alg and key_alg != alg:
            continue
        out.append(key)
    return out


def _audiences(payload: dict[str, object]) -> tuple[str, ...]:
    aud = payload.get("aud")
    if isinstance(aud, str):
        return (aud,)
    if isinstance(aud, list):
        return tuple(a for a in aud if isinstance(a, str))
    return ()


def _principal(payload: dict[str, object]) -> RequestPrincipal:
    iss = payload.get("iss")
    sub = payload.get("sub")
    azp = payload.get("azp")
    issuer = iss if isinstance(iss, str) else ""
    subject = sub if isinstance(sub, str) else ""
    return RequestPrincipal(
        principal=f"{issuer}/{subject}",
        issuer=issuer,
        subject=subject,
        claims=FrozenMap(payload),
        audiences=_audiences(payload),
        presenter=azp if isinstance(azp, str) else "",
    )


def _extract(request: RequestHead, locations: set[Location]) -> list[_Token]:
    """Every token at ``locations``, in header, parameter, cookie order, deduplicated."""
    found: dict[str, set[Location]] = {}
    for location in sorted(locations):
        kind, name, prefix = location
        values: list[str] = []
        if kind == "header":
            for value in request.header_values(name):
                if location == _BEARER:
                    if value[:7].lower() == "bearer ":
                        values.append(value[7:].strip())
                elif value.startswith(prefix):
                    values.append(value[len(prefix) :].strip())
        elif kind == "param":
            values = [v for k, v in request.query_params() if k == name]
        else:
            values = _cookies(request, name)
        for value in values:
            if value:
                found.setdefault(value, set()).add(location)
    return [_Token(text, frozenset(locs)) for text, locs in found.items()]


def _cookies(request: RequestHead, name: str) -> list[str]:
    out = []
    for header in request.header_values("cookie"):
        for pair in header.split(";"):
            key, eq, value = pair.strip().partition("=")
            if eq and key == name:
                out.append(value.strip().strip('"'))
    return out


def _claim_value(payload: FrozenMap[str, object], path: str) -> str | None:
    value: object = payload
    for key in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return ",".join(value)
    return None


def _outputs(
    headers: list[tuple[str, str]],
    rule: JwtRule,
    token: _Token,
    principal: RequestPrincipal,
    payload_segment: str,
) -> list[tuple[str, str]]:
    if not rule.forward_original_token:
        sources = {name for kind, name, _ in token.locations if kind == "header"}
        headers = [(k, v) for k, v in headers if k not in sources]
    if rule.output_payload_to_header:
        headers.append((rule.output_payload_to_header.lower(), payload_segment))
    for item in rule.output_claim_to_headers:
        value = _claim_value(principal.claims, item.claim)
        if value is not None:
            headers.append((item.header.lower(), value))
    return headers
