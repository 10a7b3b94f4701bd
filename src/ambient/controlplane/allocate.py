"""Deterministic, persisted address allocation for pods, services and nodes.

Decisions:

- Pools (defaults): pods ``127.10.0.0/16``, Services ``127.20.0.0/16``, nodes
  ``127.1.0.0/24``. Host parts ending in ``.0`` or ``.255`` are never handed out,
  nor is anything in ``127.0.0.0/24`` (the loopback addresses everyone uses).
- :meth:`AddressAllocator.sync` takes the whole world at once: every object with
  an explicit address (from its manifest), every object that wants one, and
  addresses that are merely taken (ServiceEntry VIPs and endpoints). Explicit
  addresses always win: an allocation that collides with one moves. Two objects
  claiming the same explicit address is an :class:`AddressConflict` naming both.
- An object keeps its address while it exists; new objects get the lowest free
  address of their pool, in key order, so the result is deterministic. Objects
  no longer present are released.
- Allocations persist as JSON (``addresses.json`` in the state dir), written
  atomically on every change, so a restart keeps every address.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ambient.durable import replace_durably
from ambient.state.workload import IPAddress

__all__ = [
    "DEFAULT_POOLS",
    "STATE_FILE",
    "AddressAllocator",
    "AddressConflict",
    "AllocationError",
    "AllocationKey",
]

STATE_FILE = "addresses.json"
DEFAULT_POOLS: Mapping[str, ipaddress.IPv4Network] = {
    "Pod": ipaddress.IPv4Network("127.10.0.0/16"),
    "Service": ipaddress.IPv4Network("127.20.0.0/16"),
    "Node": ipaddress.IPv4Network("127.1.0.0/24"),
}
_NEVER = ipaddress.IPv4Network("127.0.0.0/24")
_FORMAT_VERSION = 1


class AllocationError(Exception):
    """An allocation cannot be made or the state file cannot be read or written."""


class AddressConflict(AllocationError):
    """Two objects claim the same explicit address."""


@dataclass(frozen=True, order=True)
class AllocationKey:
    """Who holds an address: ``("Pod", "shop", "web-...")``, ``("Node", "", "node-1")``."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where}"


def _usable(address: ipaddress.IPv4Address, pool: ipaddress.IPv4Network) -> bool:
    last = int(address) & 0xFF
    return (
        address in pool
        and address not in _NEVER
        and last not in (0, 255)
        and address not in (pool.network_address, pool.broadcast_address)
    )


def _hosts(pool: ipaddress.IPv4Network, start: int) -> Iterator[ipaddress.IPv4Address]:
    first, last = int(pool.network_address), int(pool.broadcast_address)
    for value in range(max(first, start), last + 1):
        address = ipaddress.IPv4Address(value)
        if _usable(address, pool):
            yield address


class AddressAllocator:
    """Hands out loopback addresses from per-kind pools; see the module docstring."""

    def __init__(
        self,
        path: Path | None = None,
        *,
        pools: Mapping[str, ipaddress.IPv4Network | str] = DEFAULT_POOLS,
    ) -> None:
        """Persist to ``path`` (None: in memory only); load it if it exists."""
        self._path = path
        self._pools = {kind: ipaddress.IPv4Network(net) for kind, net in pools.items()}
        self._allocated: dict[AllocationKey, IPAddress] = {}
        if path is not None and path.exists():
            self._allocated = _load(path)

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> AddressAllocator:
        """The allocator persisted as ``<state_dir>/addresses.json``."""
        return cls(Path(state_dir) / STATE_FILE)

    @property
    def path(self) -> Path | None:
        """Where allocations persist, if anywhere."""
        return self._path

    @property
    def allocations(self) -> Mapping[AllocationKey, IPAddress]:
        """Current allocations (explicit addresses are not listed)."""
        return dict(self._allocated)

    def sync(
        self,
        explicit: Mapping[AllocationKey, IPAddress],
        wanted: Iterable[AllocationKey],
        taken: Iterable[IPAddress] = (),
    ) -> dict[AllocationKey, IPAddress]:
        """Every object's address: ``explicit`` ones as given, ``wanted`` ones allocated.

        Raises :class:`AddressConflict` (nothing changes) if two ``explicit``
        entries share an address, :class:`AllocationError` if a pool is
        exhausted or a kind has no pool.
        """
        claimed = _check_explicit(explicit)
        blocked = claimed.keys() | set(taken)
        wanted_keys = sorted(set(wanted) - explicit.keys())
        for key in wanted_keys:
            if key.kind not in self._pools:
                raise AllocationError(
                    f"cannot allocate an address for {key}: no address pool for kind "
                    f"{key.kind!r} (pools: {', '.join(sorted(self._pools))})"
                )
        kept: dict[AllocationKey, IPAddress] = {}
        used = set(blocked)  # grows with every address kept or handed out: linear overall
        for key in wanted_keys:
            address = self._allocated.get(key)
            pool = self._pools[key.kind]
            if (
                isinstance(address, ipaddress.IPv4Address)
                and address not in used
                and _usable(address, pool)
            ):
                kept[key] = address
                used.add(address)
        result = dict(kept)
        cursors: dict[str, int] = {}
        for key in wanted_keys:
            if key in result:
                continue
            pool = self._pools[key.kind]
            address = next(
                (a for a in _hosts(pool, cursors.get(key.kind, 0)) if a not in used), None
            )
            if address is None:
                raise AllocationError(
                    f"cannot allocate an address for {key}: pool {pool} is exhausted"
                )
            cursors[key.kind] = int(address) + 1
            used.add(address)
            result[key] = address
        if result != self._allocated:
            if self._path is not None:
                _save(self._path, result)
            self._allocated = result
        return {**explicit, **result}


def _check_explicit(explicit: Mapping[AllocationKey, IPAddress]) -> dict[IPAddress, AllocationKey]:
    owners: dict[IPAddress, AllocationKey] = {}
    conflicts: list[str] = []
    for key in sorted(explicit):
        address = explicit[key]
        owner = owners.setdefault(address, key)
        if owner != key:
            conflicts.append(f"address {address} is claimed by both {owner} and {key}")
    if conflicts:
        raise AddressConflict("; ".join(conflicts))
    return owners


# -- persistence ----------------------------------------------------------------------------


def _load(path: Path) -> dict[AllocationKey, IPAddress]:
    def bad(problem: str) -> AllocationError:
        return AllocationError(
            f"{path}: {problem}; remove the file to start over (addresses will change)"
        )

    try:
        data = json.loads(path.read_text("utf-8"))
    except OSError as err:
        raise AllocationError(f"cannot read {path}: {err.strerror or err}") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise bad(f"not valid JSON ({err})") from None
    if not isinstance(data, dict) or data.get("version") != _FORMAT_VERSION:
        raise bad(f"not an address allocation file (version {_FORMAT_VERSION})")
    entries = data.get("addresses")
    if not isinstance(entries, list):
        raise bad("'addresses' must be a list")
    result: dict[AllocationKey, IPAddress] = {}
    seen: dict[IPAddress, AllocationKey] = {}
    for index, entry in enumerate(entries):
        try:
            key = AllocationKey(entry["kind"], entry["namespace"], entry["name"])
            address = ipaddress.ip_address(entry["address"])
        except (TypeError, KeyError, ValueError):
            raise bad(f"entry {index} is not {{kind, namespace, name, address}}") from None
        if not all(isinstance(part, str) for part in (key.kind, key.namespace, key.name)):
            raise bad(f"entry {index}: kind, namespace and name must be strings")
        if address in seen:
            raise bad(f"address {address} is allocated to both {seen[address]} and {key}")
        seen[address] = key
        result[key] = address
    return result


def _save(path: Path, allocations: Mapping[AllocationKey, IPAddress]) -> None:
    entries = [
        {"kind": k.kind, "namespace": k.namespace, "name": k.name, "address": str(a)}
        for k, a in sorted(allocations.items())
    ]
    text = json.dumps({"version": _FORMAT_VERSION, "addresses": entries}, indent=1) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(text)
                file.flush()
                os.fsync(file.fileno())
            replace_durably(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as err:
        raise AllocationError(f"cannot write {path}: {err.strerror or err}") from None
