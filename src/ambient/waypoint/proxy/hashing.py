"""Consistent-hash load balancing (DestinationRule ``loadBalancer.consistentHash``).

The request's key, as Envoy's hash policies take it:

- ``httpHeaderName``: the header's value (several fields joined with ``,``);
- ``httpCookie``: the cookie's value (surrounding quotes dropped); when absent
  and the setting has a ``ttl``, the waypoint makes one up as Envoy does (a hash
  of the client's and the waypoint's addresses, as 16 hex digits), hashes that,
  and answers with ``Set-Cookie: name="value"; Max-Age=ttl; Path=path;
  attributes...; HttpOnly`` (no ``Max-Age`` for a ttl of 0: a session cookie) on
  the upstream's response;
- ``useSourceIp``: the caller's IP address;
- ``httpQueryParameterName``: the parameter's first value.

No key (header, cookie or parameter missing): the endpoint is picked at random,
as Envoy's ring hash does without a hash.

Algorithms: a ring hash (each endpoint gets ``minimumRingSize`` points, drawn from
a generator seeded by a hash of its address; a key goes to the first point at or after its hash) or
Maglev (the lookup table of Eisenbud et al., ``tableSize`` entries,
each endpoint's permutation from two hashes of its address). Endpoints are
identified by address, so every waypoint replica and restart maps a key to the
same endpoint, and removing one of n endpoints moves only the keys it had
(about 1/n). Hashes are 64-bit BLAKE2b (stable across processes, unlike
Python's ``hash``), not Envoy's xxHash: the mapping is not Envoy's own.

Decision: Envoy divides a ring of ``minimumRingSize`` among the endpoints
(``ceil(size / n)`` points each), so a removal also changes every other
endpoint's share and moves about 1.6/n of the keys at n = 10; here each
endpoint keeps its own points whatever n is, so exactly the removed endpoint's
keys move (the ring is then n x minimumRingSize, "at least" the minimum the API
asks for). Tables are built when an endpoint set is first seen and cached (the
last 16 sets), in the event loop: about 15 ms for a ring of 10 x 1024 points and
30-85 ms for a Maglev table of 65537 entries over 3-10 endpoints on the reference
machine, paid again for each new endpoint set (an ejection makes one).
"""

from __future__ import annotations

import bisect
import hashlib
import random
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from ambient.config.consistenthash import MAX_RING_SIZE, ConsistentHash, HashAlgorithm
from ambient.waypoint.model import Downstream, RequestHead

__all__ = ["Affinity", "HashTables", "MaglevTable", "Ring", "hash64", "request_affinity"]

E = TypeVar("E")
_CACHED_TABLES = 16


def hash64(data: bytes) -> int:
    """A stable 64-bit hash."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


@dataclass(frozen=True, slots=True)
class Affinity:
    """A request's hash key (None: pick at random) and the cookie to set, if one was made."""

    key: int | None
    set_cookie: str | None = None


def _cookie_value(head: RequestHead, name: str) -> str | None:
    for field in head.header_values("cookie"):
        for part in field.split(";"):
            key, sep, value = part.strip().partition("=")
            if sep and key == name:
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] == '"':
                    value = value[1:-1]
                return value
    return None


def _set_cookie(
    name: str, value: str, path: str, ttl: float, attributes: Sequence[tuple[str, str]]
) -> str:
    parts = [f'{name}="{value}"']
    if int(ttl) > 0:
        parts.append(f"Max-Age={int(ttl)}")
    if path:
        parts.append(f"Path={path}")
    parts.extend(f"{k}={v}" if v else k for k, v in attributes)
    parts.append("HttpOnly")
    return "; ".join(parts)


def request_affinity(
    policy: ConsistentHash, head: RequestHead, downstream: Downstream, local: str
) -> Affinity:
    """The key ``policy`` takes from this request (``local``: the address the client reached)."""
    if policy.header is not None:
        value = head.header(policy.header)
        return Affinity(None if value is None else hash64(value.encode()))
    if policy.source_ip:
        return Affinity(hash64(str(downstream.source_ip).encode()))
    if policy.query_parameter is not None:
        for key, value in head.query_params():
            if key == policy.query_parameter:
                return Affinity(hash64(value.encode()))
        return Affinity(None)
    cookie = policy.cookie
    if cookie is not None:
        present = _cookie_value(head, cookie.name)
        if present is not None:
            return Affinity(hash64(present.encode()))
        if cookie.ttl is None:
            return Affinity(None)
        remote = f"{downstream.source_ip}:{downstream.source_port}"
        made = f"{hash64((remote + local).encode()):016x}"
        header = _set_cookie(cookie.name, made, cookie.path, cookie.ttl, cookie.attributes)
        return Affinity(hash64(made.encode()), header)
    return Affinity(None)


class Ring:
    """A ring hash over endpoint ids (indices into the list it was built from)."""

    __slots__ = ("_hashes", "_owners")

    def __init__(self, ids: Sequence[str], minimum_size: int) -> None:
        per_endpoint = max(1, min(minimum_size, MAX_RING_SIZE // max(1, len(ids))))
        points = []
        for index, name in enumerate(ids):
            # The endpoint's points: a stable generator seeded by its address (fast, and the
            # same in every process), so each keeps its points whatever the others are.
            draw = random.Random(hash64(name.encode())).getrandbits
            points += [(draw(64), index) for _ in range(per_endpoint)]
        points.sort()
        self._hashes = array("Q", [h for h, _ in points])
        self._owners = array("I", [owner for _, owner in points])

    def lookup(self, key: int) -> int:
        at = bisect.bisect_left(self._hashes, key)
        return self._owners[at if at < len(self._owners) else 0]


class MaglevTable:
    """Maglev's lookup table over endpoint ids (``size`` must be prime)."""

    __slots__ = ("_table",)

    def __init__(self, ids: Sequence[str], size: int) -> None:
        n = len(ids)
        offsets = [hash64(f"{name}#offset".encode()) % size for name in ids]
        skips = [hash64(f"{name}#skip".encode()) % (size - 1) + 1 for name in ids]
        following = [0] * n
        table = [-1] * size
        filled = 0
        while True:
            for i in range(n):
                slot = (offsets[i] + following[i] * skips[i]) % size
                while table[slot] >= 0:
                    following[i] += 1
                    slot = (offsets[i] + following[i] * skips[i]) % size
                table[slot] = i
                following[i] += 1
                filled += 1
                if filled == size:
                    self._table = table
                    return

    def lookup(self, key: int) -> int:
        return self._table[key % len(self._table)]


class HashTables:
    """Builds and caches the table of each (policy, endpoint set) and picks with it."""

    def __init__(self) -> None:
        self._tables: OrderedDict[tuple[object, ...], Ring | MaglevTable] = OrderedDict()

    def pick(
        self, policy: ConsistentHash, endpoints: Sequence[E], ids: Sequence[str], key: int
    ) -> E:
        """The endpoint of ``endpoints`` (identified by ``ids``) that ``key`` maps to."""
        cache_key = (policy.algorithm, policy.size, tuple(ids))
        table = self._tables.get(cache_key)
        if table is None:
            if policy.algorithm is HashAlgorithm.MAGLEV:
                table = MaglevTable(ids, policy.size)
            else:
                table = Ring(ids, policy.size)
            self._tables[cache_key] = table
            if len(self._tables) > _CACHED_TABLES:
                self._tables.popitem(last=False)
        else:
            self._tables.move_to_end(cache_key)
        return endpoints[table.lookup(key)]
