"""``when`` conditions of L7 AuthorizationPolicy: each key is one request attribute.

A condition matches when the attribute matches any of ``values`` (if given)
and none of ``notValues`` (if given). Keys, as Istio's authorization conditions:

========================== ============================================================
``request.headers[name]``  the header's values joined with ``,``; ``*`` = present
``source.ip``              downstream address (``ipBlocks``)
``remote.ip``              client address (``remoteIpBlocks``, see ``attributes``)
``source.namespace``       peer identity's namespace
``source.principal``       peer identity without ``spiffe://``
``source.serviceAccount``  ``ns/sa`` (or ``sa`` in the policy's namespace)
``source.trustDomain``     peer identity's trust domain
``request.auth.principal`` ``iss/sub`` of the verified JWT (``requestPrincipals`` forms)
``request.auth.audiences`` any ``aud`` of the verified JWT
``request.auth.presenter`` ``azp`` of the verified JWT
``request.auth.claims[c]`` a claim; nested ``[a][b]``; list claims match any element
``destination.ip``         the address the client dialled (service VIP or pod)
``destination.port``       the port the client dialled
``connection.sni``         always empty at a waypoint: ``values`` never match
========================== ============================================================

``experimental.envoy.filters.*`` reads Envoy filter metadata we do not have: it
fails closed (never matches in ALLOW, always matches in DENY) with a load warning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ambient.authz._spec import parse_ip_block, parse_port
from ambient.authz.model import ServiceAccountMatch, StringMatch
from ambient.waypoint.policy import matchers as m
from ambient.waypoint.policy.attributes import RequestAttributes

__all__ = ["Predicate", "compile_condition", "nested_keys"]

_L4_KEYS = frozenset(
    {
        "source.ip",
        "source.namespace",
        "source.principal",
        "source.serviceAccount",
        "source.trustDomain",
        "destination.ip",
        "destination.port",
        "connection.sni",
    }
)


@dataclass(frozen=True, slots=True)
class Predicate:
    """A compiled test; ``l7`` when it needs HTTP or JWT (not available for TCP)."""

    test: m.Test
    l7: bool
    warning: str | None = None


def nested_keys(text: str) -> tuple[str, ...]:
    """``[a][b]`` -> ``("a", "b")`` (the part after the attribute name)."""
    return tuple(text[1:-1].split("]["))


def _values_test(key: str, values: Sequence[str], namespace: str) -> m.Test:
    if key.startswith("request.headers["):
        return m.header_test(key[len("request.headers[") : -1], values)
    if key.startswith("request.auth.claims["):
        return m.claim_test(nested_keys(key[len("request.auth.claims") :]), values)
    if key in ("source.ip", "remote.ip", "destination.ip"):
        nets = [parse_ip_block(v, key)[0] for v in values]
        return m.ip_test(nets, key.replace(".", "_"))
    if key == "destination.port":
        return m.port_test([parse_port(v, key) for v in values])
    if key == "source.namespace":
        return m.namespace_test(values)
    if key == "source.principal":
        return m.principal_test(values)
    if key == "source.trustDomain":
        return m.trust_domain_test(values)
    if key == "source.serviceAccount":
        accounts = []
        for v in values:
            ns, slash, sa = v.rpartition("/")
            accounts.append(ServiceAccountMatch(ns if slash else namespace, sa))
        return m.service_account_test(accounts)
    if key == "request.auth.principal":
        return m.request_principal_test(values)
    if key == "request.auth.audiences":
        return m.string_list_test(values, lambda p: p.audiences)
    if key == "request.auth.presenter":
        return m.string_list_test(values, lambda p: p.presenter)
    if key == "connection.sni":
        matchers = [StringMatch.parse(v) for v in values]
        return lambda a: any(x.matches("") for x in matchers)
    raise ValueError(f"unknown attribute {key!r}")  # validated at load: unreachable


def compile_condition(
    key: str, values: Sequence[str], not_values: Sequence[str], *, namespace: str, deny: bool
) -> Predicate:
    """One ``when`` entry of a policy in ``namespace``; ``deny`` for DENY/AUDIT policies."""
    l7 = key not in _L4_KEYS
    if key.startswith("experimental."):
        verdict = deny
        return Predicate(
            lambda a: verdict,
            l7=True,
            warning=f"`when` key {key!r} reads Envoy metadata the waypoint does not have; "
            f"the condition {'always' if deny else 'never'} matches (fail closed)",
        )
    tests: list[m.Test] = []
    if values:
        tests.append(_values_test(key, values, namespace))
    if not_values:
        tests.append(m.negate(_values_test(key, not_values, namespace)))
    if len(tests) == 1:
        return Predicate(tests[0], l7)
    first, second = tests

    def both(a: RequestAttributes) -> bool:
        return first(a) and second(a)

    return Predicate(both, l7)
