"""Header fields of HTTP/2 requests as RFC 9113 section 8 wants them (``h2server``'s checks).

Stricter than the RFC's minimum where h2 and Envoy are: a field name must be a
lower-case token (RFC 9110), not merely free of upper case and controls.
"""

from __future__ import annotations

import re

__all__ = ["FieldError", "check_regular", "content_length", "request"]

Fields = tuple[tuple[str, str], ...]
_CONNECTION_SPECIFIC = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}
)
_PSEUDO = frozenset({":method", ":scheme", ":authority", ":path", ":protocol"})
_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")
_BAD_VALUE = re.compile(r"[\x00\r\n]|\A[ \t]|[ \t]\Z")
_DECIMAL = re.compile(r"[0-9]{1,18}")


class FieldError(ValueError):
    """A malformed header block: what is wrong, without the (possibly secret) value."""


def check_regular(fields: Fields) -> None:
    """Lower-case token names (so no pseudo-header), none connection-specific, ``te`` only
    ``trailers``, no NUL/CR/LF nor surrounding whitespace in values."""
    for name, value in fields:
        if not _NAME.fullmatch(name):
            raise FieldError(f"bad header name {name[:40]!r}")
        if name in _CONNECTION_SPECIFIC:
            raise FieldError(f"connection-specific header {name!r}")
        if name == "te" and value.lower() != "trailers":
            raise FieldError(f"te: {value[:40]!r}")
        if value and _BAD_VALUE.search(value):
            raise FieldError(f"header {name!r} with a bad value")


def request(fields: Fields) -> tuple[dict[str, str], Fields]:
    """A request head's pseudo-header fields and regular fields, validated (RFC 9113 8.3)."""
    pseudo: dict[str, str] = {}
    count = 0
    for name, value in fields:
        if not name.startswith(":"):
            break
        if name not in _PSEUDO:
            raise FieldError(f"pseudo-header {name[:40]!r} in a request")
        if name in pseudo:
            raise FieldError(f"pseudo-header {name} twice")
        if value and _BAD_VALUE.search(value):
            raise FieldError(f"{name} with a bad value")
        pseudo[name] = value
        count += 1
    regular = fields[count:]
    check_regular(regular)
    method = pseudo.get(":method")
    if method is None:
        raise FieldError("a request without :method")
    if method == "CONNECT" and ":protocol" not in pseudo:
        if ":scheme" in pseudo or ":path" in pseudo:
            raise FieldError("CONNECT with :scheme or :path")
    else:
        if ":scheme" not in pseudo or ":path" not in pseudo:
            raise FieldError("a request without :scheme or :path")
        if not pseudo[":path"]:
            raise FieldError("an empty :path")
        if ":protocol" in pseudo and method != "CONNECT":
            raise FieldError(":protocol outside CONNECT")
    hosts = [value for name, value in regular if name == "host"]
    if len(hosts) > 1:
        raise FieldError("more than one host")
    authority = pseudo.get(":authority")
    if authority is None and not hosts:
        raise FieldError("a request without :authority or host")
    if authority is not None and hosts and hosts[0] != authority:
        raise FieldError(":authority and host differ")
    return pseudo, regular


def content_length(fields: Fields) -> int | None:
    """The declared body length (every ``content-length`` field must agree), or None."""
    expected = None
    for name, value in fields:
        if name == "content-length":
            if not _DECIMAL.fullmatch(value) or (expected is not None and int(value) != expected):
                raise FieldError(f"bad content-length {value[:20]!r}")
            expected = int(value)
    return expected
