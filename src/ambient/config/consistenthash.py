"""DestinationRule ``loadBalancer.consistentHash``: types and schema (applied by
``waypoint.proxy.hashing``).

Istio's ``ConsistentHashLB`` has two oneofs, checked here as the CRD checks them:
the hash key (``httpHeaderName``, ``httpCookie``, ``useSourceIp``,
``httpQueryParameterName``: at most one) and the algorithm (``ringHash`` or
``maglev``: at most one; neither means a ring hash). Defaults are Envoy's as
istiod sets them: a ring of at least 1024 entries (``ringHash.minimumRingSize``,
or the deprecated top-level ``minimumRingSize``), a Maglev table of 65537
(``maglev.tableSize``, which Envoy requires to be a prime below 5000011, so a
non-prime is refused here as Envoy would refuse the cluster). An ``httpCookie``
with a ``ttl`` makes the waypoint generate the cookie when the request lacks it
(a ``ttl`` of 0 makes it a session cookie); without ``ttl`` a request without
the cookie has no hash key.

Decision: a consistentHash with no hash key at all loads (the CRD allows it) and
balances like Envoy's ring hash without a key, at random.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ambient.config.l7fields import GoDuration
from ambient.config.schema import Bool, FieldPath, Int, ListOf, Obj, Report, Str, req

__all__ = ["CONSISTENT_HASH", "ConsistentHash", "HashAlgorithm", "HashCookie", "is_prime"]

DEFAULT_RING_SIZE = 1024
MAX_RING_SIZE = 8 * 1024 * 1024  # Envoy's maximum_ring_size default
DEFAULT_TABLE_SIZE = 65537
MAX_TABLE_SIZE = 5000011


class HashAlgorithm(enum.Enum):
    RING_HASH = "RING_HASH"
    MAGLEV = "MAGLEV"


@dataclass(frozen=True, slots=True)
class HashCookie:
    """``httpCookie``: its name; with ``ttl`` (seconds, 0: a session cookie) the waypoint
    sets it when the client has none."""

    name: str
    path: str = ""
    ttl: float | None = None
    attributes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ConsistentHash:
    """One ``consistentHash`` setting: the key to hash and the algorithm's table size."""

    header: str | None = None  # lower-cased
    cookie: HashCookie | None = None
    source_ip: bool = False
    query_parameter: str | None = None
    algorithm: HashAlgorithm = HashAlgorithm.RING_HASH
    size: int = DEFAULT_RING_SIZE  # ring: minimum entries; maglev: the table size
    both_algorithms: bool = field(default=False, compare=False)  # refused at load


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    i = 3
    while i * i <= n:
        if n % i == 0:
            return False
        i += 2
    return True


def _attribute(name: str, value: str = "") -> tuple[str, str]:
    return (name, value)


def _cookie(
    name: str,
    path: str = "",
    ttl: float | None = None,
    attributes: tuple[tuple[str, str], ...] = (),
) -> HashCookie:
    return HashCookie(name, path, ttl, attributes)


def _ring(minimum_ring_size: int = 0) -> tuple[HashAlgorithm, int]:
    return HashAlgorithm.RING_HASH, minimum_ring_size or DEFAULT_RING_SIZE


def _maglev(table_size: int = 0) -> tuple[HashAlgorithm, int]:
    return HashAlgorithm.MAGLEV, table_size or DEFAULT_TABLE_SIZE


def _consistent_hash(
    http_header_name: str | None = None,
    http_cookie: HashCookie | None = None,
    use_source_ip: bool = False,
    http_query_parameter_name: str | None = None,
    ring_hash: tuple[HashAlgorithm, int] | None = None,
    maglev: tuple[HashAlgorithm, int] | None = None,
    minimum_ring_size: int = 0,
) -> ConsistentHash:
    algorithm, size = maglev or ring_hash or _ring(minimum_ring_size)
    return ConsistentHash(
        header=http_header_name.lower() if http_header_name else None,
        cookie=http_cookie,
        source_ip=use_source_ip,
        query_parameter=http_query_parameter_name or None,
        algorithm=algorithm,
        size=size,
        both_algorithms=ring_hash is not None and maglev is not None,
    )


def _check(value: ConsistentHash, at: FieldPath, report: Report) -> None:
    keys = [
        name
        for name, present in (
            ("httpHeaderName", value.header is not None),
            ("httpCookie", value.cookie is not None),
            ("useSourceIp", value.source_ip),
            ("httpQueryParameterName", value.query_parameter is not None),
        )
        if present
    ]
    if len(keys) > 1:
        report.error(at, f"only one hash key may be set, got {', '.join(keys)}")
    if value.both_algorithms:
        report.error(at, "only one of ringHash or maglev may be set")


def _check_table(value: tuple[HashAlgorithm, int], at: FieldPath, report: Report) -> None:
    size = value[1]
    if size >= MAX_TABLE_SIZE or not is_prime(size):
        report.error(
            (*at, "tableSize"), f"must be a prime number below {MAX_TABLE_SIZE}, got {size}"
        )


_COOKIE = Obj(
    _cookie,
    {
        "name": req(Str()),
        "path": Str(),
        "ttl": GoDuration(allow_zero=True),
        "attributes": ListOf(Obj(_attribute, {"name": req(Str()), "value": Str()})),
    },
)
_RING = Obj(_ring, {"minimumRingSize": Int(0, MAX_RING_SIZE)})
_MAGLEV = Obj(_maglev, {"tableSize": Int(0)}, checks=[_check_table])


CONSISTENT_HASH = Obj(
    _consistent_hash,
    {
        "httpHeaderName": Str(),
        "httpCookie": _COOKIE,
        "useSourceIp": Bool(),
        "httpQueryParameterName": Str(),
        "ringHash": _RING,
        "maglev": _MAGLEV,
        "minimumRingSize": Int(0, MAX_RING_SIZE),
    },
    checks=[_check],
)
