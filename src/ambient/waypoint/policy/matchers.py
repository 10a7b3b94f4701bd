"""Field matchers of L7 AuthorizationPolicy: each turns policy values into a test of a request.

Every builder returns a ``Test`` that is true when ANY of the values matches
(policy values of one field are ORed); ``negate`` makes the ``not*`` form. The
string forms follow Istio's generator (``pilot/pkg/security/authz/model``):

- ``*`` needs a non-empty value (Envoy regex ``.+``), except for headers,
  methods and hosts, where ``*`` only needs the header to be present;
- ``principals`` compare the peer identity without ``spiffe://``; an identity
  field never matches a peer without identity (its ``not*`` form then does);
- ``requestPrincipals`` split the value at its last ``/`` into issuer and
  subject and match each (``*`` = both non-empty, ``iss/*``, ``*/sub``, ...);
- ``hosts`` are case-insensitive; a value without a port also matches the
  authority with any port (``orders`` matches ``orders:8080``), a value with a
  port compares the whole authority;
- ``request.auth.claims[a][b]`` reads nested claims; a list claim matches when
  any string element matches; a claim that is not a string (number, boolean,
  object) never matches, as with Envoy's string matcher on JWT metadata.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from ambient.authz.model import IPNetwork, MatchKind, ServiceAccountMatch, StringMatch
from ambient.waypoint.model import RequestPrincipal
from ambient.waypoint.policy.attributes import RequestAttributes
from ambient.waypoint.policy.paths import compile_path

__all__ = [
    "Test",
    "claim_test",
    "header_test",
    "host_test",
    "ip_test",
    "method_test",
    "namespace_test",
    "negate",
    "path_test",
    "port_test",
    "principal_test",
    "request_principal_test",
    "service_account_test",
    "string_list_test",
    "trust_domain_test",
]

Test = Callable[[RequestAttributes], bool]


def negate(test: Test) -> Test:
    return lambda a: not test(a)


def _any(matchers: Sequence[StringMatch], value: str) -> bool:
    return any(m.matches(value) for m in matchers)


def principal_test(values: Sequence[str]) -> Test:
    matchers = [StringMatch.parse(v) for v in values]
    exact = {m.value for m in matchers if m.kind is MatchKind.EXACT}
    if len(exact) == len(matchers):  # the common case: a set lookup
        return lambda a: a.principal in exact
    return lambda a: a.principal is not None and _any(matchers, a.principal)


def namespace_test(values: Sequence[str]) -> Test:
    matchers = [StringMatch.parse(v) for v in values]
    if all(m.kind is MatchKind.EXACT for m in matchers):
        wanted = frozenset(values)
        return lambda a: a.peer is not None and a.peer.namespace in wanted
    return lambda a: a.peer is not None and _any(matchers, a.peer.namespace)


def trust_domain_test(values: Sequence[str]) -> Test:
    matchers = [StringMatch.parse(v) for v in values]
    return lambda a: a.peer is not None and _any(matchers, a.peer.trust_domain)


def service_account_test(values: Sequence[ServiceAccountMatch]) -> Test:
    wanted = {(v.namespace, v.service_account) for v in values}
    return lambda a: a.peer is not None and (a.peer.namespace, a.peer.service_account) in wanted


def ip_test(networks: Sequence[IPNetwork], attribute: str) -> Test:
    nets = tuple(networks)
    if attribute == "source_ip":
        return lambda a: any(a.source_ip in n for n in nets)
    if attribute == "remote_ip":
        return lambda a: any(a.remote_ip in n for n in nets)
    return lambda a: any(a.destination_ip in n for n in nets)


def port_test(ports: Sequence[int]) -> Test:
    wanted = frozenset(ports)
    return lambda a: a.destination_port in wanted


class _Matcher(Protocol):
    def matches(self, value: str) -> bool: ...


_ANY = StringMatch(MatchKind.PRESENCE)


def _request_principal_matcher(value: str) -> tuple[_Matcher, _Matcher]:
    """(issuer, subject) matchers of one ``requestPrincipals`` value, as istiod splits it."""
    idx = value.rfind("/")
    found = idx >= 0
    iss, sub = (value[:idx], value[idx + 1 :]) if found else (value, "")
    if value == "*":
        return _ANY, _ANY
    if value.startswith("*"):
        if found:
            issuer = _ANY if iss == "*" else StringMatch(MatchKind.SUFFIX, iss[1:])
            return issuer, _exact(sub)
        return _ANY, StringMatch(MatchKind.SUFFIX, value[1:])
    if value.endswith("*"):
        if found:
            subject = _ANY if sub == "*" else StringMatch(MatchKind.PREFIX, sub[:-1])
            return _exact(iss), subject
        return StringMatch(MatchKind.PREFIX, value[:-1]), _ANY
    return _exact(iss), _exact(sub)


class _Exact:
    """An exact match that, unlike ``StringMatch``, may compare with the empty string."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def matches(self, value: str) -> bool:
        return value == self.value


def _exact(value: str) -> _Matcher:
    return StringMatch(MatchKind.EXACT, value) if value else _Exact(value)


def request_principal_test(values: Sequence[str]) -> Test:
    pairs = [_request_principal_matcher(v) for v in values]

    def test(a: RequestAttributes) -> bool:
        jwt = a.jwt
        if jwt is None:
            return False
        return any(i.matches(jwt.issuer) and s.matches(jwt.subject) for i, s in pairs)

    return test


def _header_value_test(
    values: Sequence[str], read: Callable[[RequestAttributes], str | None]
) -> Test:
    if "*" in values:
        return lambda a: read(a) is not None
    matchers = [StringMatch.parse(v) for v in values]

    def test(a: RequestAttributes) -> bool:
        value = read(a)
        return value is not None and _any(matchers, value)

    return test


def header_test(name: str, values: Sequence[str]) -> Test:
    name = name.lower()
    return _header_value_test(values, lambda a: a.request.header(name) if a.request else None)


def method_test(values: Sequence[str]) -> Test:
    if all("*" not in v for v in values):
        wanted = frozenset(values)
        return lambda a: a.method in wanted
    return _header_value_test(values, lambda a: a.method if a.request else None)


def host_test(values: Sequence[str]) -> Test:
    if "*" in values:
        return lambda a: a.request is not None
    with_port = [StringMatch.parse(v.lower()) for v in values if ":" in v.lstrip("*").rstrip("*")]
    without = [StringMatch.parse(v.lower()) for v in values if ":" not in v.lstrip("*").rstrip("*")]
    return lambda a: _any(without, a.host_no_port) or _any(with_port, a.host)


def path_test(values: Sequence[str]) -> Test:
    matchers = [compile_path(v) for v in values]
    exact = {m.value for m in matchers if isinstance(m, StringMatch) and m.kind is MatchKind.EXACT}
    if len(exact) == len(matchers):
        return lambda a: a.request is not None and a.path in exact
    return lambda a: a.request is not None and any(m.matches(a.path) for m in matchers)


def _claim(principal: RequestPrincipal, path: Sequence[str]) -> object:
    value: object = principal.claims
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def string_list_test(values: Sequence[str], read: Callable[[RequestPrincipal], object]) -> Test:
    """Match a JWT value that is a string or a list of strings (any element)."""
    matchers = [StringMatch.parse(v) for v in values]

    def test(a: RequestAttributes) -> bool:
        if a.jwt is None:
            return False
        value = read(a.jwt)
        if isinstance(value, str):
            return _any(matchers, value)
        if isinstance(value, list | tuple):
            return any(isinstance(v, str) and _any(matchers, v) for v in value)
        return False

    return test


def claim_test(path: Sequence[str], values: Sequence[str]) -> Test:
    keys = tuple(path)
    return string_list_test(values, lambda p: _claim(p, keys))
