"""Field values: only SP/HTAB are whitespace and only ASCII 0-9 are digits."""

from __future__ import annotations

import pytest

from ambient.waypoint.proxy.fieldtext import decimal, strip_ows
from ambient.waypoint.proxy.h1codec import ParseError, find_head_end, parse_request_head


def test_strip_only_sp_and_htab() -> None:
    assert strip_ows(" \t5\t ") == "5"
    assert strip_ows("\xa05") == "\xa05"
    assert strip_ows("5\x85") == "5\x85"


@pytest.mark.parametrize("text", ["", "²", "1²", "٣", "\uff15", "+5", "-5", " 5", "5_0", "1" * 21])
def test_not_a_decimal(text: str) -> None:
    assert decimal(text) is None


def test_decimal() -> None:
    assert decimal("0") == 0
    assert decimal("00012") == 12
    assert decimal("9" * 20) == int("9" * 20)


@pytest.mark.parametrize(
    "value", [b"\xa05", b"5\xa0", b"\x855", b"\xb2", b"5, \xa05", b"\xa0chunked"]
)
def test_framing_fields_with_unicode_whitespace_or_digits_are_refused(value: bytes) -> None:
    name = b"transfer-encoding" if b"chunked" in value else b"content-length"
    head = b"POST / HTTP/1.1\r\nhost: x\r\n" + name + b": " + value + b"\r\n\r\n"
    with pytest.raises(ParseError):
        parse_request_head(head, find_head_end(head))


# -- the same slip outside the codec: a clear refusal, never a ValueError from int() ----------


def test_a_unicode_digit_port_in_a_host_is_no_port() -> None:
    from ambient.waypoint.policy.attributes import strip_port
    from ambient.waypoint.routing.filters import split_host_port

    assert split_host_port("orders:\xb2") == ("orders", None)
    assert strip_port("orders:\xb2") == "orders:\xb2"
    assert split_host_port("orders:8080") == ("orders", 8080)


def test_a_unicode_digit_in_retry_on_is_a_problem() -> None:
    from ambient.config.l7fields import parse_retry_on

    _, codes, problems = parse_retry_on("5xx,\xb2,503")
    assert codes == {503} and any("'\xb2'" in p for p in problems)


def test_a_unicode_digit_port_level_mtls_key_is_refused() -> None:
    from ambient.authz import PolicyError
    from ambient.authz.peerauth import translate_peer_authentication

    spec = {
        "selector": {"matchLabels": {"app": "a"}},
        "portLevelMtls": {"\xb2": {"mode": "STRICT"}},
    }
    with pytest.raises(PolicyError, match="invalid port"):
        translate_peer_authentication("p", "shop", spec)
