"""Field values are bytes, not Unicode text: ASCII-only stripping and numbers.

Heads are decoded as latin-1, so every byte becomes one character, and
Python's ``str`` methods then apply Unicode rules: ``strip()`` removes
``\\xa0`` (NBSP) and ``\\x85`` (NEL), ``isdigit()`` is true for ``²``, ``³``
and ``¹`` (which ``int()`` then refuses with a ``ValueError``). HTTP knows
only SP and HTAB as whitespace around a value (RFC 9110 5.6.3, as h11 and
Envoy) and only ASCII ``0-9`` as digits; these helpers say exactly that.
(Names are tokens, ASCII by the grammar, so their ``lower()`` is safe.)
"""

from __future__ import annotations

import os

OWS = " \t"
_DIGITS = frozenset("0123456789")


def strip_ows(text: str) -> str:
    """``text`` without leading and trailing SP/HTAB (and nothing else)."""
    return text.strip(OWS)


def decimal(text: str, max_digits: int = 20) -> int | None:
    """``text`` as a non-negative integer if it is 1 to ``max_digits`` ASCII digits, else None."""
    if not 0 < len(text) <= max_digits or not _DIGITS.issuperset(text):
        return None
    return int(text)


def request_uuid() -> str:
    """A random (version 4) UUID as text, for ``x-request-id``: what ``str(uuid.uuid4())``
    gives (16 bytes from ``os.urandom``, version and variant bits set), in a fifth of the
    time."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


_VARIANT = "89ab"
