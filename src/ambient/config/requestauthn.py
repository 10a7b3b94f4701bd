"""``RequestAuthentication`` (security.istio.io): types and a strict schema.

A built-in kind (``config.kinds``): a bad one is refused at load with its field
path. Checks, as Istio's ``ValidateRequestAuthentication`` plus what the waypoint needs:

- at most one of ``selector``, ``targetRef``, ``targetRefs`` (max 16);
- each rule has ``issuer`` or ``jwksUri``; ``jwksUri`` is an ``http(s)`` URL
  with a host; inline ``jwks`` must parse as a JWK Set (JSON) and wins over
  ``jwksUri`` when both are set (with a warning);
- audiences, ``fromParams``, ``fromCookies`` and header names are non-empty;
  header names are HTTP tokens; ``timeout`` is an Istio duration of at least 1ms
  (``5s``, ``500ms``; ``config.duration``), as every other Istio duration field.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from joserfc.jwk import KeySet

from ambient.config.frozen import FrozenMap
from ambient.config.l7fields import GoDuration
from ambient.config.meta import resource_schema
from ambient.config.resources import ObjectMeta
from ambient.config.schema import (
    Bool,
    Custom,
    FieldPath,
    ListOf,
    MapOf,
    Obj,
    Report,
    Str,
    req,
)
from ambient.config.targetref import TargetRef

__all__ = [
    "REQUEST_AUTHENTICATION",
    "ClaimToHeader",
    "JwtHeader",
    "JwtRule",
    "RequestAuthentication",
    "RequestAuthenticationSpec",
    "WorkloadSelector",
    "parse_jwks",
]

ISTIO_SECURITY = ("security.istio.io/v1", "security.istio.io/v1beta1")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
DEFAULT_TIMEOUT = 5.0  # seconds, Istio's default JWKS fetch timeout


@dataclass(frozen=True)
class JwtHeader:
    """``fromHeaders`` entry: the token is the header value after ``prefix``."""

    name: str
    prefix: str = ""


@dataclass(frozen=True)
class ClaimToHeader:
    """``outputClaimToHeaders`` entry: copy ``claim`` (``a.b`` for nested) into ``header``."""

    header: str
    claim: str


@dataclass(frozen=True)
class JwtRule:
    """One ``jwtRules`` entry. ``timeout`` is in seconds."""

    issuer: str = ""
    audiences: tuple[str, ...] = ()
    jwks_uri: str = ""
    jwks: str = ""
    from_headers: tuple[JwtHeader, ...] = ()
    from_params: tuple[str, ...] = ()
    from_cookies: tuple[str, ...] = ()
    output_payload_to_header: str = ""
    forward_original_token: bool = False
    output_claim_to_headers: tuple[ClaimToHeader, ...] = ()
    timeout: float = DEFAULT_TIMEOUT


@dataclass(frozen=True)
class WorkloadSelector:
    match_labels: FrozenMap[str, str] = field(default_factory=FrozenMap)


@dataclass(frozen=True)
class RequestAuthenticationSpec:
    selector: WorkloadSelector | None = None
    target_ref: TargetRef | None = None
    target_refs: tuple[TargetRef, ...] = ()
    jwt_rules: tuple[JwtRule, ...] = ()

    @property
    def refs(self) -> tuple[TargetRef, ...]:
        """``targetRefs``, or the legacy single ``targetRef``."""
        if self.target_refs:
            return self.target_refs
        return (self.target_ref,) if self.target_ref is not None else ()


@dataclass(frozen=True)
class RequestAuthentication:
    meta: ObjectMeta
    api_version: str = ISTIO_SECURITY[0]
    spec: RequestAuthenticationSpec = field(default_factory=RequestAuthenticationSpec)
    kind: str = field(default="RequestAuthentication", init=False)


def parse_jwks(text: str) -> KeySet:
    """A JWK Set from its JSON text; ``ValueError`` with the reason."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"jwks is not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError('jwks must be a JSON object with a "keys" list')
    try:
        return KeySet.import_key_set(data)  # type: ignore[arg-type]
    except Exception as exc:  # joserfc raises several types for bad keys
        raise ValueError(f"jwks has an invalid key: {exc}") from None


def _header_name(value: str) -> str | None:
    return None if _TOKEN.fullmatch(value) else f"invalid HTTP header name {value!r}"


def _not_empty(value: str) -> str | None:
    return "must not be empty" if not value else None


def _jwks_uri(value: str) -> str | None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"invalid jwksUri {value!r}: expected an http:// or https:// URL with a host"
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        return f"invalid jwksUri {value!r}: {exc}"
    return None


def _jwks_text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected the JWK Set as a JSON string, got {type(value).__name__}")
    parse_jwks(value)
    return value


def _check_rule(rule: JwtRule, at: FieldPath, report: Report) -> None:
    if not rule.issuer and not rule.jwks_uri:
        report.error((*at, "issuer"), "issuer or jwksUri must be set")
    if rule.jwks and rule.jwks_uri:
        report.warn((*at, "jwksUri"), "both jwks and jwksUri are set: the inline jwks is used")


def _check_spec(spec: RequestAuthenticationSpec, at: FieldPath, report: Report) -> None:
    set_fields = [
        name
        for name, present in (
            ("selector", spec.selector is not None),
            ("targetRef", spec.target_ref is not None),
            ("targetRefs", bool(spec.target_refs)),
        )
        if present
    ]
    if len(set_fields) > 1:
        report.error((*at, set_fields[1]), f"only one of {' or '.join(set_fields)} can be set")
    if len(spec.target_refs) > 16:
        report.error((*at, "targetRefs"), "at most 16 targetRefs are allowed")


TARGET_REF = Obj(
    TargetRef,
    {
        "group": Str(),
        "kind": req(Str(_not_empty)),
        "name": req(Str(_not_empty)),
        "namespace": Str(),
    },
)
JWT_RULE = Obj(
    JwtRule,
    {
        "issuer": Str(),
        "audiences": ListOf(Str(_not_empty)),
        "jwksUri": Str(_jwks_uri),
        "jwks": Custom(_jwks_text, "a JWK Set as a JSON string"),
        "fromHeaders": ListOf(
            Obj(JwtHeader, {"name": req(Str(_not_empty, _header_name)), "prefix": Str()})
        ),
        "fromParams": ListOf(Str(_not_empty)),
        "fromCookies": ListOf(Str(_not_empty)),
        "outputPayloadToHeader": Str(_header_name),
        "forwardOriginalToken": Bool(),
        "outputClaimToHeaders": ListOf(
            Obj(
                ClaimToHeader,
                {"header": req(Str(_not_empty, _header_name)), "claim": req(Str(_not_empty))},
            )
        ),
        "timeout": GoDuration(allow_zero=False),
    },
    checks=[_check_rule],
)
REQUEST_AUTHENTICATION_SPEC = Obj(
    RequestAuthenticationSpec,
    {
        "selector": Obj(WorkloadSelector, {"matchLabels": MapOf(Str())}),
        "targetRef": TARGET_REF,
        "targetRefs": ListOf(TARGET_REF),
        "jwtRules": ListOf(JWT_RULE),
    },
    checks=[_check_spec],
)
REQUEST_AUTHENTICATION = resource_schema(RequestAuthentication, REQUEST_AUTHENTICATION_SPEC)
