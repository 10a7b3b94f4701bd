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
