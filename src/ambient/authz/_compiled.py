"""Policies compiled for fast decisions.

Semantics are exactly ``reference.authorization_matches``. Each policy is compiled
once (one generated test per group, see ``_codegen``), dropping what can never match
(empty matches, groups with an unsatisfiable clause). Per workload, groups are filed
under a key they provably require (peer service account or namespace, destination
port; else "any"), so a decision tests only plausible groups, and verdicts are
memoized per equivalence class of connections (``CompiledPolicySet.key``).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from ipaddress import IPv4Network, IPv6Network

from ambient.authz._codegen import Check, group_test
from ambient.authz.conn import Connection, Decision, policy_decision, strict_decision
from ambient.authz.model import Action, Authorization, Group, IPNetwork, Match
from ambient.authz.model import MatchKind as K
from ambient.authz.peerauth import EffectiveMtls

__all__ = [
    "ActionIndex",
    "CompiledGroup",
    "CompiledPolicy",
    "CompiledPolicySet",
    "compile_group",
]

# Index keys a group provably requires: the peer's (namespace, service account) or
# else its namespace, and the destination port. A group is filed under both when it
# requires both, so a decision only tests groups that can match its peer and port.
_Keys = dict[str, frozenset[object]]
_Filing = tuple[tuple[str, frozenset[object]], ...]


_DIMENSIONS = ("service_account", "source_namespace", "destination_port")


def _principal_keys(m: Match) -> tuple[frozenset[object] | None, frozenset[object] | None]:
    """(service accounts, namespaces) the positive principals imply, where they do."""
    accounts: set[object] = set()
    namespaces: set[object] = set()
    for p in m.principals:
        parts = p.value.split("/")
        if p.kind is K.EXACT and len(parts) == 5 and parts[1] == "ns" and parts[3] == "sa":
            accounts.add((parts[2], parts[4]))
            namespaces.add(parts[2])
        elif p.kind is K.PREFIX and len(parts) >= 4 and parts[1] == "ns" and parts[2]:
            namespaces.add(parts[2])  # "<td>/ns/<ns>/...": the namespace is complete
        else:
            return None, None
    exact = len(accounts) == len(m.principals)
    return (frozenset(accounts) if exact else None), frozenset(namespaces)


def _match_keys(m: Match) -> _Keys:
    keys: _Keys = {}
    if m.destination_ports:
        keys["destination_port"] = frozenset(m.destination_ports)
    if m.service_accounts:
        accounts = frozenset((a.namespace, a.service_account) for a in m.service_accounts)
        keys["service_account"] = frozenset(accounts)
        keys["source_namespace"] = frozenset(ns for ns, _ in accounts)
    elif m.principals:
        by_account, by_ns = _principal_keys(m)
        if by_account is not None:
            keys["service_account"] = by_account
        if by_ns is not None:
            keys["source_namespace"] = by_ns
    exact_namespaces = m.namespaces and all(n.kind is K.EXACT for n in m.namespaces)
    if "source_namespace" not in keys and exact_namespaces:
        keys["source_namespace"] = frozenset(n.value for n in m.namespaces)
    if m.not_namespaces and all(n.kind is K.EXACT for n in m.not_namespaces):
        keys["not_namespace"] = frozenset(n.value for n in m.not_namespaces)
    return keys


class CompiledGroup:
    """A group as one test, with the peer key and ports it requires (None: any)."""

    __slots__ = (
        "any_of",
        "mentioned_ports",
        "networks",
        "peer",
        "peer_values",
        "ports",
        "src_nets",
        "test",
    )

    def __init__(
        self,
        test: Check,
        required: _Keys,
        clauses: list[list[Match]],
        src_nets: frozenset[IPNetwork] | None,
        any_of: _Filing | None,
    ):
        self.test = test
        self.src_nets = src_nets  # the source is in one of these (None: any)
        self.any_of = any_of  # one of these keys holds (None: no such clause)
        self.peer: str | None = None
        self.peer_values: frozenset[object] = frozenset()
        for dim in _DIMENSIONS[:2]:
            if dim in required:
                self.peer, self.peer_values = dim, required[dim]
                break
        self.ports = required.get("destination_port")
        matches = [m for clause in clauses for m in clause]
        self.mentioned_ports = frozenset(
            p for m in matches for p in (*m.destination_ports, *m.not_destination_ports)
        )
        self.networks = tuple(
            [("src", n) for m in matches for n in (*m.source_ips, *m.not_source_ips)]
            + [("dst", n) for m in matches for n in (*m.destination_ips, *m.not_destination_ips)]
        )


def compile_group(group: Group) -> CompiledGroup | None:
    """Compile one group; None when it can never match."""
    clauses: list[list[Match]] = []
    required: _Keys = {}
    src_nets: frozenset[IPNetwork] | None = None
    any_of: _Filing | None = None
    for rules in group.rules:
        if not rules.matches:
            continue  # an empty clause always matches
        live = [m for m in rules.matches if not m.is_empty]
        if not live:
            return None  # only empty matches: ztunnel skips them all
        clauses.append(live)
        if all(m.source_ips for m in live):
            nets = frozenset(n for m in live for n in m.source_ips)
            src_nets = nets if src_nets is None or len(nets) < len(src_nets) else src_nets
        per_match = [_match_keys(m) for m in live]
        if any_of is None:
            any_of = _any_of(live, per_match)
        for dim in _DIMENSIONS:
            if all(dim in keys for keys in per_match):
                union = frozenset().union(*(keys[dim] for keys in per_match))
                required[dim] = required[dim] & union if dim in required else union
    if any(not values for values in required.values()):
        return None  # the clauses need disjoint values: unsatisfiable
    return CompiledGroup(group_test(clauses), required, clauses, src_nets, any_of)


def _any_of(live: list[Match], per_match: list[_Keys]) -> _Filing | None:
    """One key per match of an ORed clause (the group needs one of them), if each has one."""
    out: list[tuple[str, frozenset[object]]] = []
    for m, keys in zip(live, per_match, strict=True):
        if "service_account" in keys:
            out.append(("service_account", keys["service_account"]))
        elif "source_namespace" in keys:
            out.append(("source_namespace", keys["source_namespace"]))
        elif m.source_ips:
            out.append(("source_ip", frozenset(m.source_ips)))
        elif "not_namespace" in keys:
            out.append(("not_namespace", keys["not_namespace"]))
        elif "destination_port" in keys:
            out.append(("destination_port", keys["destination_port"]))
        else:
            return None
    return tuple(out)


class CompiledPolicy:
    """One policy compiled once and shared by every workload it applies to."""

    __slots__ = ("decision", "groups", "policy")

    def __init__(self, policy: Authorization):
        self.policy = policy
        self.decision = policy_decision(policy)
        compiled = (compile_group(g) for g in policy.groups)
        self.groups = tuple(g for g in compiled if g is not None)

    def matches(self, c: Connection) -> bool:
        """Whether any group matches."""
        for g in self.groups:  # noqa: SIM110 - faster than any(...) on the hot path
            if g.test(c):
                return True
        return False


_Entry = tuple[int, Check, Decision]
_NEVER = 1 << 62
MEMO_LIMIT = 8192  # entries per memo before it is cleared; bounds memory


_Bounds = dict[int, list[int]]


def _classes(net: IPNetwork, bounds: _Bounds) -> range:
    """Indexes of the elementary address intervals (see ``CompiledPolicySet``) in ``net``."""
    points, start = bounds[net.version], int(net.network_address)
    end = start + net.num_addresses
    return range(bisect_right(points, start), bisect_right(points, end - 1) + 1)


class ActionIndex:
    """Enforced groups of one action, filed by a key each provably requires.

    The key is the peer's service account or namespace (with the port when required),
    else the elementary interval of the source address, else one key per entry of an
    ORed clause (the group is filed under each; ``notNamespaces`` entries go to a list
    consulted only for peers outside those namespaces), else the port, else "any".
    """

    __slots__ = (
        "_outside",
        "by_account",
        "by_account_port",
        "by_ns",
        "by_ns_port",
        "by_port",
        "by_src",
        "outside_ns",
        "src_bounds",
        "wildcard",
    )

    def __init__(self, policies: Sequence[CompiledPolicy], src_bounds: _Bounds):
        names = ("service_account", "source_namespace", None)
        buckets: dict[tuple[str | None, bool], dict[object, list[_Entry]]] = {
            (peer, with_port): {} for peer in names for with_port in (False, True)
        }
        by_src: dict[object, list[_Entry]] = {}
        outside: list[tuple[frozenset[object], _Entry]] = []
        for order, cp in enumerate(policies):  # already in key order
            for g in cp.groups:
                entry = (order, g.test, cp.decision)
                if g.peer is None and g.src_nets is not None:
                    filing: _Filing = (("source_ip", frozenset(g.src_nets)),)
                elif g.peer is None and g.any_of is not None:
                    filing = g.any_of
                else:
                    peers: frozenset[object] = g.peer_values if g.peer else frozenset([None])
                    for peer in peers:
                        if g.ports is None:
                            buckets[g.peer, False].setdefault(peer, []).append(entry)
                        for port in g.ports or ():
                            key = port if g.peer is None else (peer, port)
                            buckets[g.peer, True].setdefault(key, []).append(entry)
                    continue
                for dim, values in filing:
                    if dim == "not_namespace":
                        outside.append((values, entry))
                        continue
                    for value in values:
                        if isinstance(value, IPv4Network | IPv6Network):  # source_ip
                            for index in _classes(value, src_bounds):
                                by_src.setdefault((value.version, index), []).append(entry)
                        elif dim == "destination_port":
                            buckets[None, True].setdefault(value, []).append(entry)
                        else:  # service_account or source_namespace
                            buckets[dim, False].setdefault(value, []).append(entry)

        def freeze(by_key: dict[object, list[_Entry]]) -> dict[object, tuple[_Entry, ...]]:
            return {k: tuple(sorted(set(v), key=lambda e: e[0])) for k, v in by_key.items()}

        self.by_account_port = freeze(buckets["service_account", True])
        self.by_account = freeze(buckets["service_account", False])
        self.by_ns_port = freeze(buckets["source_namespace", True])
        self.by_ns = freeze(buckets["source_namespace", False])
        self.by_port = freeze(buckets[None, True])
        self.wildcard = freeze(buckets[None, False]).get(None, ())
        self.by_src = freeze(by_src)
        self.src_bounds = src_bounds
        self.outside_ns = tuple(outside)  # (namespaces, entry): for peers outside them
        self._outside: dict[str | None, tuple[_Entry, ...]] = {}

    def _outside_of(self, ns: str | None) -> tuple[_Entry, ...]:
        """Entries whose excluded namespaces do not include ``ns`` (memoized per ns)."""
        found = self._outside.get(ns)
        if found is None:
            entries = {entry for excluded, entry in self.outside_ns if ns not in excluded}
            found = tuple(sorted(entries, key=lambda e: e[0]))
            if len(self._outside) >= MEMO_LIMIT:
                self._outside.clear()
            self._outside[ns] = found
        return found

    def first(self, c: Connection) -> Decision | None:
        """The verdict of the first policy (in key order) with a matching group, or None."""
        account, port = c.service_account, c.destination_port
        src = None
        if self.by_src:
            version, ip = c.src_net
            points = self.src_bounds.get(version)
            if points:
                src = self.by_src.get((version, bisect_right(points, ip)))
        outside = self._outside_of(c.source_namespace) if self.outside_ns else None
        if account is None:
            buckets: tuple[tuple[_Entry, ...] | None, ...] = (
                src,
                outside,
                self.by_port.get(port),
                self.wildcard,
            )
        else:
            ns = account[0]
            buckets = (
                self.by_account_port.get((account, port)) if self.by_account_port else None,
                self.by_account.get(account) if self.by_account else None,
                self.by_ns_port.get((ns, port)) if self.by_ns_port else None,
                self.by_ns.get(ns) if self.by_ns else None,
                src,
                outside,
                self.by_port.get(port),
                self.wildcard,
            )
        best_order, best = _NEVER, None
        for bucket in buckets:
            if bucket:
                for order, test, decision in bucket:
                    if order >= best_order:
                        break
                    if test(c):
                        best_order, best = order, decision
                        break
        return best


_Key = tuple[str | None, int, tuple[int, int], tuple[int, int]]


class CompiledPolicySet:
    """Everything one workload's decisions need, precomputed, and a verdict memo.

    Every test is a function of the peer principal (which fixes its namespace and
    service account), of whether the port is one the policies name, and of which
    policy CIDRs contain each address. Connections equal on those get equal verdicts,
    so verdicts are memoized under that key (``key``).
    """

    __slots__ = (
        "_bounds",
        "_ports",
        "allow",
        "audit",
        "deny",
        "dry_run",
        "dry_run_has_allow",
        "has_allow",
        "memo",
        "mtls",
        "observed",
        "policies",
        "strict_verdict",
    )

    def __init__(self, policies: Sequence[CompiledPolicy], mtls: EffectiveMtls):
        ordered = sorted(policies, key=lambda cp: cp.policy.key)
        self.policies = tuple(cp.policy for cp in ordered)
        self.mtls = mtls
        groups = [g for cp in ordered for g in cp.groups]
        self._ports = frozenset(p for g in groups for p in g.mentioned_ports)
        self._ports |= frozenset(p for p, _ in mtls.ports)
        # Boundaries of every policy CIDR: addresses between two consecutive boundaries
        # (an elementary interval) are inside exactly the same CIDRs.
        edges: dict[tuple[str, int], set[int]] = {}
        for g in groups:
            for side, net in g.networks:
                start = int(net.network_address)
                edges.setdefault((side, net.version), set()).update(
                    (start, start + net.num_addresses)
                )
        self._bounds = {key: sorted(points) for key, points in edges.items()}
        src_bounds = {v: points for (side, v), points in self._bounds.items() if side == "src"}
        self.audit = tuple(cp for cp in ordered if cp.policy.action is Action.AUDIT)
        self.dry_run = tuple(
            cp for cp in ordered if cp.policy.dry_run and cp.policy.action is not Action.AUDIT
        )
        self.dry_run_has_allow = any(cp.policy.action is Action.ALLOW for cp in self.dry_run)
        enforced = [cp for cp in ordered if not cp.policy.dry_run]
        allow = [cp for cp in enforced if cp.policy.action is Action.ALLOW]
        deny = [cp for cp in enforced if cp.policy.action is Action.DENY]
        self.has_allow = bool(allow)
        self.allow = ActionIndex(allow, src_bounds)
        self.deny = ActionIndex(deny, src_bounds)
        self.memo: dict[_Key, Decision] = {}
        self.observed: dict[tuple[object, ...], Decision] = {}
        self.strict_verdict = strict_decision(mtls.policy)

    def key(self, c: Connection) -> _Key:
        """The memo key of ``c``: equal keys imply equal verdicts."""
        port = c.destination_port if c.destination_port in self._ports else -1
        (sv, sip), (dv, dip) = c.src_net, c.dst_net
        bounds = self._bounds
        src = bisect_right(bounds["src", sv], sip) if ("src", sv) in bounds else 0
        dst = bisect_right(bounds["dst", dv], dip) if ("dst", dv) in bounds else 0
        return (c.principal, port, (sv, src), (dv, dst))
