"""A group's test generated as one Python expression, evaluated with no nested calls.

The generated source is built only from fixed templates, attribute names of
``Connection``, integers and the names of constants (frozensets/tuples of policy
values) bound in the function's private globals: no policy string is ever pasted
into code. Differential tests compare it with ``reference.authorization_matches``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ambient.authz.conn import Connection
from ambient.authz.model import IPNetwork, Match, StringMatch
from ambient.authz.model import MatchKind as K

__all__ = ["Check", "group_test"]

Check = Callable[[Connection], bool]


class _Consts:
    """Constants referenced by name from generated code."""

    def __init__(self) -> None:
        self.values: dict[str, object] = {}

    def add(self, value: object) -> str:
        name = f"_k{len(self.values)}"
        self.values[name] = value
        return name


def _not(expr: str, negate: bool) -> str:
    return f"(not {expr})" if negate else expr


def _strings(matches: Sequence[StringMatch], attr: str, negate: bool, k: _Consts) -> str:
    exact = frozenset(m.value for m in matches if m.kind is K.EXACT)
    prefixes = tuple(m.value for m in matches if m.kind is K.PREFIX)
    suffixes = tuple(m.value for m in matches if m.kind is K.SUFFIX)
    if any(m.kind is K.PRESENCE for m in matches):
        return _not(f"bool(c.{attr})", negate)  # presence: any non-empty value
    if not prefixes and not suffixes:  # None (no identity) is never in the set
        return f"(c.{attr} {'not in' if negate else 'in'} {k.add(exact)})"
    parts = [f"v in {k.add(exact)}"] if exact else []
    parts += [f"v.startswith({k.add(prefixes)})"] if prefixes else []
    parts += [f"v.endswith({k.add(suffixes)})"] if suffixes else []
    return _not(f"((v := c.{attr}) is not None and ({' or '.join(parts)}))", negate)


def _networks(nets: Sequence[IPNetwork], attr: str, negate: bool) -> str:
    by_version: dict[int, list[str]] = {}
    for net in nets:
        mask, base = int(net.netmask), int(net.network_address)
        by_version.setdefault(net.version, []).append(f"a[1] & {mask} == {base}")
    alternatives = [
        f"(a[0] == {version} and ({' or '.join(tests)}))" for version, tests in by_version.items()
    ]
    return _not(f"((a := c.{attr}) and ({' or '.join(alternatives)}))", negate)


def _match(m: Match, k: _Consts) -> str:
    fields: list[str] = []
    for ports, negate in ((m.destination_ports, False), (m.not_destination_ports, True)):
        if ports:
            op = "not in" if negate else "in"
            fields.append(f"(c.destination_port {op} {k.add(frozenset(ports))})")
    for accounts, negate in ((m.service_accounts, False), (m.not_service_accounts, True)):
        if accounts:
            keys = frozenset((a.namespace, a.service_account) for a in accounts)
            fields.append(f"(c.service_account {'not in' if negate else 'in'} {k.add(keys)})")
    for strings, attr, negate in (
        (m.principals, "principal", False),
        (m.not_principals, "principal", True),
        (m.namespaces, "source_namespace", False),
        (m.not_namespaces, "source_namespace", True),
    ):
        if strings:
            fields.append(_strings(strings, attr, negate, k))
    for nets, attr, negate in (
        (m.source_ips, "src_net", False),
        (m.not_source_ips, "src_net", True),
        (m.destination_ips, "dst_net", False),
        (m.not_destination_ips, "dst_net", True),
    ):
        if nets:
            fields.append(_networks(nets, attr, negate))
    return f"({' and '.join(fields)})"


def group_test(clauses: Sequence[Sequence[Match]]) -> Check:
    """The test for a group: every clause has a matching Match (all non-empty)."""
    k = _Consts()
    parts = [f"({' or '.join(_match(m, k) for m in clause)})" for clause in clauses]
    source = f"lambda c: {' and '.join(parts) or 'True'}"
    scope: dict[str, object] = {"__builtins__": {"bool": bool}, **k.values}
    test: Check = eval(compile(source, "<authz group>", "eval"), scope)
    return test
