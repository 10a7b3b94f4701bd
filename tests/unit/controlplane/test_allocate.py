"""AddressAllocator: pools, explicit addresses, persistence, release, conflicts."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from ambient.controlplane import AddressAllocator, AddressConflict, AllocationError, AllocationKey

ip = ipaddress.ip_address


def pod(name: str, ns: str = "default") -> AllocationKey:
    return AllocationKey("Pod", ns, name)


def svc(name: str, ns: str = "default") -> AllocationKey:
    return AllocationKey("Service", ns, name)


def node(name: str) -> AllocationKey:
    return AllocationKey("Node", "", name)


def test_pools_and_order() -> None:
    got = AddressAllocator().sync(
        {}, [pod("b"), pod("a"), svc("s"), node("node-2"), node("node-1")]
    )
    assert got == {
        pod("a"): ip("127.10.0.1"),
        pod("b"): ip("127.10.0.2"),
        svc("s"): ip("127.20.0.1"),
        node("node-1"): ip("127.1.0.1"),
        node("node-2"): ip("127.1.0.2"),
    }


def test_skips_0_and_255_host_parts() -> None:
    allocator = AddressAllocator()
    got = allocator.sync({}, [pod(f"p{i:03}") for i in range(300)])
    addresses = sorted(got.values())
    assert addresses[253] == ip("127.10.0.254")
    assert addresses[254] == ip("127.10.1.1")
    assert all(int(a) & 0xFF not in (0, 255) for a in addresses)


def test_never_hands_out_127_0_0_x() -> None:
    allocator = AddressAllocator(pools={"Pod": "127.0.0.0/23"})
    got = allocator.sync({}, [pod("a"), pod("b")])
    assert sorted(got.values()) == [ip("127.0.1.1"), ip("127.0.1.2")]
    assert all(a not in ipaddress.ip_network("127.0.0.0/24") for a in got.values())


def test_explicit_wins_and_moves_an_allocation() -> None:
    allocator = AddressAllocator()
    assert allocator.sync({}, [pod("a")]) == {pod("a"): ip("127.10.0.1")}
    # A manifest now claims a's address: the explicit owner keeps it, a moves.
    got = allocator.sync({pod("fixed"): ip("127.10.0.1")}, [pod("a")])
    assert got == {pod("fixed"): ip("127.10.0.1"), pod("a"): ip("127.10.0.2")}
    assert allocator.allocations == {pod("a"): ip("127.10.0.2")}


def test_explicit_and_taken_addresses_are_never_allocated() -> None:
    got = AddressAllocator().sync(
        {svc("orders"): ip("127.10.0.1")}, [pod("a"), svc("web")], taken=[ip("127.10.0.2")]
    )
    assert got[pod("a")] == ip("127.10.0.3")
    assert got[svc("web")] == ip("127.20.0.1")


def test_conflict_names_both_and_changes_nothing() -> None:
    allocator = AddressAllocator()
    allocator.sync({}, [pod("a")])
    with pytest.raises(AddressConflict) as err:
        allocator.sync({pod("x", "shop"): ip("10.0.0.1"), svc("y", "shop"): ip("10.0.0.1")}, [])
    assert str(err.value) == ("address 10.0.0.1 is claimed by both Pod shop/x and Service shop/y")
    assert allocator.allocations == {pod("a"): ip("127.10.0.1")}


def test_kept_while_present_released_when_deleted() -> None:
    allocator = AddressAllocator()
    allocator.sync({}, [pod("a"), pod("b")])
    got = allocator.sync({}, [pod("b"), pod("c")])  # a deleted, c new
    assert got == {pod("b"): ip("127.10.0.2"), pod("c"): ip("127.10.0.1")}
    assert pod("a") not in allocator.allocations


def test_persisted_across_allocators(tmp_path: Path) -> None:
    first = AddressAllocator.in_state_dir(tmp_path / "state")
    first.sync({}, [pod("b"), node("node-9")])
    first.sync({}, [pod("a"), pod("b"), node("node-9"), node("node-1")])
    again = AddressAllocator.in_state_dir(tmp_path / "state")
    got = again.sync({}, [pod("a"), pod("b"), node("node-1"), node("node-9")])
    assert got == {
        pod("b"): ip("127.10.0.1"),
        pod("a"): ip("127.10.0.2"),
        node("node-9"): ip("127.1.0.1"),
        node("node-1"): ip("127.1.0.2"),
    }
    data = json.loads((tmp_path / "state" / "addresses.json").read_text())
    assert data["version"] == 1 and len(data["addresses"]) == 4
    assert not [p for p in (tmp_path / "state").iterdir() if p.name != "addresses.json"]


def test_no_write_without_change(tmp_path: Path) -> None:
    path = tmp_path / "addresses.json"
    allocator = AddressAllocator(path)
    allocator.sync({}, [pod("a")])
    path.write_text(path.read_text() + " ")  # a marker a rewrite would remove
    allocator.sync({}, [pod("a")])
    assert path.read_text().endswith("\n ")
    allocator.sync({}, [pod("a"), pod("b")])
    assert path.read_text().endswith("}\n")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not valid JSON"),
        ('{"version": 2, "addresses": []}', "not an address allocation file"),
        ('{"version": 1, "addresses": [{"kind": "Pod"}]}', "entry 0 is not"),
        (
            '{"version": 1, "addresses": ['
            '{"kind": "Pod", "namespace": "d", "name": "a", "address": "127.10.0.1"},'
            '{"kind": "Pod", "namespace": "d", "name": "b", "address": "127.10.0.1"}]}',
            "allocated to both Pod d/a and Pod d/b",
        ),
    ],
)
def test_bad_state_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "addresses.json"
    path.write_text(text)
    with pytest.raises(AllocationError, match=message) as err:
        AddressAllocator(path)
    assert str(path) in str(err.value) and "remove the file" in str(err.value)


def test_exhausted_and_unknown_kind() -> None:
    allocator = AddressAllocator(pools={"Pod": "127.9.9.0/30"})
    with pytest.raises(AllocationError, match=r"pool 127\.9\.9\.0/30 is exhausted"):
        allocator.sync({}, [pod("a"), pod("b"), pod("c")])
    with pytest.raises(AllocationError, match="no address pool for kind 'Gateway'"):
        allocator.sync({}, [AllocationKey("Gateway", "d", "g")])
