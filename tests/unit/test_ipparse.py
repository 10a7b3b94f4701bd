"""The cached IP parser gives what ``ipaddress.ip_address`` gives, refuses what it refuses,
and keeps at most its bound."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ambient import ipparse
from ambient.ipparse import parse_ip


@given(st.one_of(st.ip_addresses().map(str), st.text(max_size=45)))
def test_same_answer_as_ipaddress(text: str) -> None:
    try:
        expected = ipaddress.ip_address(text)
    except ValueError:
        with pytest.raises(ValueError):
            parse_ip(text)
        assert text not in ipparse._KEPT
        return
    assert parse_ip(text) == expected
    assert parse_ip(text) == expected  # from the cache the second time


def test_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ipparse, "_KEPT", {})
    monkeypatch.setattr(ipparse, "MAX_KEPT", 3)
    for i in range(10):
        assert parse_ip(f"10.0.0.{i}") == ipaddress.IPv4Address(f"10.0.0.{i}")
    assert len(ipparse._KEPT) == 3


@given(st.ip_addresses(), st.integers(min_value=0, max_value=65535))
def test_printing_matches_str_and_socket_address(ip: ipaddress._BaseAddress, port: int) -> None:
    from ambient.hbone.messages import SocketAddress

    assert isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address)
    assert ipparse.ip_text(ip) == str(ip)
    assert ipparse.ip_text(ip) == str(ip)  # from the cache the second time
    assert ipparse.address_text(ip, port) == str(SocketAddress(ip, port))


def test_the_printed_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ipparse, "_TEXT", {})
    monkeypatch.setattr(ipparse, "MAX_KEPT", 3)
    for i in range(10):
        assert ipparse.ip_text(ipaddress.IPv4Address(f"10.0.0.{i}")) == f"10.0.0.{i}"
    assert len(ipparse._TEXT) == 3
